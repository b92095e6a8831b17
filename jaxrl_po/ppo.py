"""PPO: ``make_train(config) -> train(key) -> TrainOutput``, one compiled program."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_po import loop
from jaxrl_po.advantages import gae
from jaxrl_po.config import PPOConfig
from jaxrl_po.envs import make_vec_env
from jaxrl_po.losses import PPOBatch, normalize, ppo_loss
from jaxrl_po.networks import policy_for
from jaxrl_po.rollout import EnvCarry, Transition, finished_episode_stats, init_env_carry, rollout
from jaxrl_po.update import grad_in_pieces, make_optimizer, pieces_for, sgd_epochs


class TrainState(NamedTuple):
    """Everything carried from one update to the next (one seed)."""

    params: Any
    opt_state: Any
    env: EnvCarry
    key: jax.Array
    update: jax.Array  # i32[] updates done
    env_steps: jax.Array  # i32[] env steps consumed
    nonfinite: jax.Array  # i32[] loop.nonfinite_code that stopped the run; 0 while healthy


class PPOMetrics(NamedTuple):
    """Per-update scalars (``[num_updates]`` each after training)."""

    env_steps: jax.Array  # i32: cumulative env steps after this update
    episode_return: jax.Array  # mean return of episodes finished this update; NaN if none
    episode_length: jax.Array
    episodes: jax.Array  # how many episodes finished this update
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_frac: jax.Array
    explained_var: jax.Array
    grad_norm: jax.Array  # global gradient norm before clipping, mean over the update's steps
    lr: jax.Array
    nonfinite: jax.Array  # i32: loop.nonfinite_code of this update (the update was discarded if > 0)


def uses_obs_normalization(config, discrete: bool) -> bool:
    return (not discrete) if config.normalize_obs is None else config.normalize_obs


CPU_GRAD_PIECE_SIZE = 1024  # fastest of 512-16384 for 65536-sample minibatches on the 2-core CPU (README "Throughput")


def grad_piece_size(config: PPOConfig) -> int:
    """Samples per gradient piece: ``config.grad_piece_size``, or by default 1024 on CPU and 0 (whole) elsewhere."""
    if config.grad_piece_size is not None:
        return config.grad_piece_size
    return CPU_GRAD_PIECE_SIZE if jax.default_backend() == "cpu" else 0


def explained_variance(value: jax.Array, target: jax.Array) -> jax.Array:
    """1 - Var[target - value] / Var[target]; NaN when the targets are constant."""
    var_target = target.var()
    return jnp.where(var_target > 0, 1.0 - (target - value).var() / var_target, jnp.nan)


def rollout_advantages(
    policy: Any, params: Any, traj: Transition, gamma: jax.Array, gae_lambda: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(value, advantage, target), each f[T, B], of a rollout ([T, B] transitions).

    Every step bootstraps from V(final_obs): the next observation, except at an
    episode's end, where it is the episode's last one (not the next episode's
    first). So a truncated step keeps the value of where the episode was cut;
    only ``terminated`` zeroes the bootstrap (in :func:`jaxrl_po.advantages.gae`).
    """
    value = policy.value(params, traj.obs)
    next_value = policy.value(params, traj.final_obs)
    advantage, target = gae(traj.reward, value, next_value, traj.terminated, traj.done, gamma, gae_lambda)
    return value, advantage, target


def make_algorithm(config: PPOConfig) -> loop.Algorithm:
    """PPO as :class:`jaxrl_po.loop.Algorithm` (init / update / finished)."""
    config.validate()
    env = make_vec_env(config.env, config.num_envs)
    spec = env.action_spec
    policy = policy_for(config, env)
    normalize_obs = uses_obs_normalization(config, spec.discrete)
    scale_reward = (not spec.discrete) if config.normalize_reward is None else config.normalize_reward
    num_updates = config.num_updates
    num_pieces = pieces_for(config.minibatch_size, grad_piece_size(config))  # per minibatch gradient

    def init(key: jax.Array, hparams: dict) -> TrainState:
        hp = config.resolve_hparams(hparams)
        init_key, env_key, key = jax.random.split(key, 3)
        params = policy.init(init_key, env.obs_dim)
        opt_state = make_optimizer(hp["max_grad_norm"]).init(params)
        zero = jnp.int32(0)
        return TrainState(params, opt_state, init_env_carry(env_key, env, normalize_obs), key, zero, zero, zero)

    def update(state: TrainState, hparams: dict) -> tuple[TrainState, PPOMetrics]:
        hp = config.resolve_hparams(hparams)
        key, rollout_key, sgd_key = jax.random.split(state.key, 3)
        env_carry, traj = rollout(
            rollout_key, state.env, state.params, policy, env, config.num_steps,
            normalize_obs, scale_reward, hp["gamma"],
        )
        value, advantage, target = rollout_advantages(policy, state.params, traj, hp["gamma"], hp["gae_lambda"])
        flat = lambda x: x.reshape((-1,) + x.shape[2:])  # [T, B, ...] -> [T*B, ...]
        batch = PPOBatch(
            obs=flat(traj.obs), action=flat(traj.action), log_prob=flat(traj.log_prob),
            value=flat(value), advantage=flat(advantage), target=flat(target),
        )
        lr = hp["lr"] * (1.0 - state.update / num_updates) if config.anneal_lr else hp["lr"]
        loss_fn = lambda p, mb: ppo_loss(p, policy, mb, hp, config.clip_value_loss)
        grad_pieces = grad_in_pieces(loss_fn, num_pieces)

        def minibatch_grad(params, minibatch: PPOBatch):
            if config.norm_adv:  # over the whole minibatch, before any split into pieces
                minibatch = minibatch._replace(advantage=normalize(minibatch.advantage))
            return grad_pieces(params, minibatch)

        params, opt_state, info, grad_norm = sgd_epochs(
            sgd_key, state.params, state.opt_state, batch, minibatch_grad, make_optimizer(hp["max_grad_norm"]), lr,
            config.update_epochs, config.num_minibatches,
        )
        code = loop.nonfinite_code(info, grad_norm, params)
        env_steps = state.env_steps + config.steps_per_update
        new_state = TrainState(params, opt_state, env_carry, key, state.update + 1, env_steps, code)
        ep_return, ep_length, episodes = finished_episode_stats(traj)
        metrics = PPOMetrics(
            env_steps=env_steps,
            episode_return=ep_return,
            episode_length=ep_length,
            episodes=episodes.astype(jnp.float32),
            policy_loss=info.policy_loss,
            value_loss=info.value_loss,
            entropy=info.entropy,
            approx_kl=info.approx_kl,
            clip_frac=info.clip_frac,
            explained_var=explained_variance(value, target),
            grad_norm=grad_norm,
            lr=jnp.asarray(lr, jnp.float32),
            nonfinite=code,
        )
        return loop.keep_if_finite(state, new_state, code), metrics

    return loop.Algorithm(init, update, lambda state: state.update >= num_updates, num_updates)
