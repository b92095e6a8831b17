"""GRPO: critic-free group-relative policy optimisation on gymnax, one compiled program.

Each update resets ``num_groups`` groups of ``group_size`` envs (one start state
per group), plays whole episodes, turns episode returns into group-relative
advantages and runs epochs of minibatch SGD over whole groups. The budget counts
alive steps, so the number of updates is not known in advance: ``train``'s
metrics have ``config.max_updates`` rows, and rows past the last update hold
NaN (and env_steps 0).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_po.advantages import carries_no_signal, group_spread, outcome_advantage, rtg_advantage
from jaxrl_po.config import GRPOConfig
from jaxrl_po.envs import RunningMeanStd, make_vec_env
from jaxrl_po.layout import shard_envs
from jaxrl_po.losses import GRPOBatch, grpo_loss
from jaxrl_po.networks import policy_for
from jaxrl_po import loop
from jaxrl_po.ppo import uses_obs_normalization
from jaxrl_po.rollout import episode_rollout
from jaxrl_po.update import make_optimizer, sgd_epochs


class GRPOState(NamedTuple):
    params: Any
    ref_params: Any
    opt_state: Any
    obs_stats: RunningMeanStd
    key: jax.Array
    update: jax.Array  # i32[] updates done
    env_steps: jax.Array  # i32[] alive steps consumed
    nonfinite: jax.Array  # i32[] loop.nonfinite_code that stopped the run; 0 while healthy


class GRPOMetrics(NamedTuple):
    """Per-update scalars; rows past the last update hold NaN (and env_steps 0)."""

    env_steps: jax.Array  # cumulative alive steps after this update
    episode_return: jax.Array  # mean over the update's episodes (all candidates)
    episode_length: jax.Array
    episodes: jax.Array
    alive_steps: jax.Array  # env steps inside episodes this update
    padded_steps: jax.Array  # env steps run after an episode ended (masked out)
    zero_spread_frac: jax.Array  # fraction of kept groups whose returns all agree
    policy_loss: jax.Array
    kl_ref: jax.Array
    approx_kl: jax.Array
    entropy: jax.Array
    clip_frac_low: jax.Array
    clip_frac_high: jax.Array
    grad_norm: jax.Array  # global gradient norm before clipping, mean over the update's steps
    lr: jax.Array
    nonfinite: jax.Array  # i32: loop.nonfinite_code of this update (the update was discarded if > 0)


def to_groups(x: jax.Array, num_groups: int) -> jax.Array:
    """[H, B, ...] time-major -> [G, K, H, ...] group-major."""
    x = jnp.swapaxes(x, 0, 1)
    return x.reshape((num_groups, -1) + x.shape[1:])


def keep_widest_groups(returns: jax.Array, num_keep: int) -> jax.Array:
    """Indices of the ``num_keep`` groups with the largest return spread. returns: f32[G, K] -> i32[num_keep].

    Groups that carry no signal rank last: the rounding noise of equal float returns is not a spread.
    """
    return jax.lax.top_k(jnp.where(carries_no_signal(returns), -1.0, group_spread(returns)), num_keep)[1]


def make_algorithm(config: GRPOConfig) -> loop.Algorithm:
    """GRPO as :class:`jaxrl_po.loop.Algorithm` (init / update / finished)."""
    config.validate()
    opts = config.grpo
    num_candidates = config.num_envs * opts.oversample
    env = make_vec_env(config.env, num_candidates)
    spec = env.action_spec
    policy = policy_for(config, env, with_critic=False)
    normalize_obs = uses_obs_normalization(config, spec.discrete)
    horizon = opts.episode_horizon(env.max_episode_steps)
    num_groups = config.num_groups

    def init(key: jax.Array, hparams: dict) -> GRPOState:
        hp = config.resolve_hparams(hparams)
        init_key, key = jax.random.split(key)
        params = policy.init(init_key, env.obs_dim)
        zero = jnp.int32(0)
        return GRPOState(
            params=params,
            ref_params=params,
            opt_state=make_optimizer(hp["max_grad_norm"]).init(params),
            obs_stats=RunningMeanStd.create((env.obs_dim,)),
            key=key,
            update=zero,
            env_steps=zero,
            nonfinite=zero,
        )

    def update(state: GRPOState, hparams: dict) -> tuple[GRPOState, GRPOMetrics]:
        hp = config.resolve_hparams(hparams)
        key, rollout_key, sgd_key = jax.random.split(state.key, 3)
        stats = state.obs_stats if normalize_obs else None
        episodes, steps_run = episode_rollout(
            rollout_key, state.params, policy, env, stats, opts.group_size, horizon,
            opts.chunk_size, opts.shared_step_keys, opts.shared_reset,
        )
        alive = episodes.alive.astype(jnp.float32)
        alive_steps = episodes.alive.sum(dtype=jnp.int32)  # exact (a float32 sum is not above 2**24)
        group = lambda x: to_groups(x, num_groups * opts.oversample)
        all_returns = group(episodes.reward * alive).sum(-1)
        obs = stats.normalize(episodes.obs) if normalize_obs else episodes.obs
        data = dict(obs=group(obs), action=group(episodes.action), log_prob=group(episodes.log_prob),
                    reward=group(episodes.reward), mask=group(alive))
        if opts.oversample > 1:
            keep = keep_widest_groups(all_returns, num_groups)
            data = {k: v[keep] for k, v in data.items()}
        data = shard_envs(data)  # whole groups per "envs" device: group advantages stay on one device
        returns = (data["reward"] * data["mask"]).sum(-1)  # f32[G, K]
        if opts.advantage == "outcome":
            advantage = outcome_advantage(returns, opts.scale)[..., None] * data["mask"]
        else:
            advantage = rtg_advantage(data["reward"], data["mask"], hp["gamma"], opts.scale)
        ref_log_prob = policy.dist(state.ref_params, data["obs"]).log_prob(data["action"])
        batch = GRPOBatch(
            obs=data["obs"], action=data["action"], log_prob=data["log_prob"],
            ref_log_prob=ref_log_prob, advantage=advantage, mask=data["mask"],
        )
        alive_per_minibatch = data["mask"].sum() / config.num_minibatches
        progress = state.env_steps / config.total_timesteps
        lr = hp["lr"] * jnp.maximum(0.0, 1.0 - progress) if config.anneal_lr else hp["lr"]
        loss_fn = lambda p, mb: grpo_loss(
            p, policy, mb, hp, opts.loss_type, opts.importance_sampling, alive_per_minibatch, horizon
        )
        params, opt_state, info, grad_norm = sgd_epochs(
            sgd_key, state.params, state.opt_state, batch, jax.grad(loss_fn, has_aux=True),
            make_optimizer(hp["max_grad_norm"]), lr,
            config.update_epochs, config.num_minibatches,
        )
        code = loop.nonfinite_code(info, grad_norm, params)
        done = state.update + 1
        ref_params = state.ref_params
        if opts.ref_sync_every > 0:
            sync = done % opts.ref_sync_every == 0
            alpha = jnp.where(sync, hp["ref_mixup_alpha"], 0.0)
            ref_params = jax.tree_util.tree_map(lambda p, r: alpha * p + (1.0 - alpha) * r, params, ref_params)
        obs_stats = state.obs_stats
        if normalize_obs:
            flat = episodes.obs.reshape((-1, env.obs_dim))
            obs_stats = obs_stats.update(flat, episodes.alive.reshape(-1))
        env_steps = state.env_steps + alive_steps
        num_episodes = all_returns.size
        row = GRPOMetrics(
            env_steps=env_steps,
            episode_return=all_returns.mean(),
            episode_length=alive_steps / num_episodes,
            episodes=jnp.float32(num_episodes),
            alive_steps=alive_steps.astype(jnp.float32),
            padded_steps=(steps_run * num_candidates - alive_steps).astype(jnp.float32),
            zero_spread_frac=carries_no_signal(returns).mean(),
            grad_norm=grad_norm,
            lr=jnp.asarray(lr, jnp.float32),
            nonfinite=code,
            **info._asdict(),
        )
        new_state = GRPOState(params, ref_params, opt_state, obs_stats, key, done, env_steps, code)
        return loop.keep_if_finite(state, new_state, code), row

    def finished(state: GRPOState) -> jax.Array:
        return jnp.logical_or(state.env_steps >= config.total_timesteps, state.update >= config.max_updates)

    return loop.Algorithm(init, update, finished, config.max_updates)
