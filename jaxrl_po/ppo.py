"""PPO: ``make_train(config) -> train(key) -> TrainOutput``, one compiled program."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_po.advantages import gae
from jaxrl_po.config import PPOConfig
from jaxrl_po.envs import make_vec_env
from jaxrl_po.losses import PPOBatch, ppo_loss
from jaxrl_po.networks import make_policy
from jaxrl_po.rollout import EnvCarry, finished_episode_stats, init_env_carry, rollout
from jaxrl_po.update import make_optimizer, sgd_epochs


class TrainState(NamedTuple):
    """Everything carried from one update to the next (one seed)."""

    params: Any
    opt_state: Any
    env: EnvCarry
    key: jax.Array


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
    lr: jax.Array


class TrainOutput(NamedTuple):
    state: TrainState
    metrics: Any  # PPOMetrics | GRPOMetrics, each leaf [num_updates]


UpdateCallback = Callable[[Any, Any, Any], None]
"""host function (run_id, update, metrics) called during training through ``jax.debug.callback``."""


def uses_obs_normalization(config, discrete: bool) -> bool:
    return (not discrete) if config.normalize_obs is None else config.normalize_obs


def report_every(num_updates: int) -> int:
    """Callback period: about 50 reports per run, so the host is not a bottleneck."""
    return max(1, num_updates // 50)


def maybe_report(callback: UpdateCallback | None, run_id, update, num_updates: int, metrics) -> None:
    """Call ``callback`` from inside the compiled loop every :func:`report_every` updates and at the end."""
    if callback is None:
        return
    done = update + 1
    due = jnp.logical_or(done % report_every(num_updates) == 0, done == num_updates)
    jax.lax.cond(due, lambda: jax.debug.callback(callback, run_id, done, metrics), lambda: None)


def explained_variance(value: jax.Array, target: jax.Array) -> jax.Array:
    """1 - Var[target - value] / Var[target]; NaN when the targets are constant."""
    var_target = target.var()
    return jnp.where(var_target > 0, 1.0 - (target - value).var() / var_target, jnp.nan)


def make_train(config: PPOConfig, callback: UpdateCallback | None = None):
    """Build ``train(key, hparams=None, run_id=0) -> TrainOutput`` for PPO.

    ``hparams`` overrides the traced hyperparameters (a dict of scalars, see
    :meth:`PPOConfig.hparams`); ``jax.jit(jax.vmap(train))(keys)`` trains one
    seed per key in one compiled call. ``callback`` (host side) receives
    ``(run_id, update, PPOMetrics)`` about 50 times per run.
    """
    config.validate()
    env = make_vec_env(config.env, config.num_envs)
    spec = env.action_spec
    policy = make_policy(spec, config.hidden_sizes, config.activation, config.log_std_init)
    normalize_obs = uses_obs_normalization(config, spec.discrete)
    scale_reward = (not spec.discrete) if config.normalize_reward is None else config.normalize_reward
    num_updates = config.num_updates

    def train(key: jax.Array, hparams: dict[str, jax.Array] | None = None, run_id=0) -> TrainOutput:
        hp = {**config.hparams(), **(hparams or {})}
        optimizer = make_optimizer(hp["max_grad_norm"])
        init_key, env_key, key = jax.random.split(key, 3)
        params = policy.init(init_key, env.obs_dim)
        state = TrainState(params, optimizer.init(params), init_env_carry(env_key, env, normalize_obs), key)

        def update(state: TrainState, update_idx: jax.Array) -> tuple[TrainState, PPOMetrics]:
            key, rollout_key, sgd_key = jax.random.split(state.key, 3)
            env_carry, traj = rollout(
                rollout_key, state.env, state.params, policy, env, config.num_steps,
                normalize_obs, scale_reward, hp["gamma"],
            )
            value = policy.value(state.params, traj.obs)
            next_value = policy.value(state.params, traj.final_obs)
            advantage, target = gae(
                traj.reward, value, next_value, traj.terminated, traj.done, hp["gamma"], hp["gae_lambda"]
            )
            flat = lambda x: x.reshape((-1,) + x.shape[2:])  # [T, B, ...] -> [T*B, ...]
            batch = PPOBatch(
                obs=flat(traj.obs), action=flat(traj.action), log_prob=flat(traj.log_prob),
                value=flat(value), advantage=flat(advantage), target=flat(target),
            )
            lr = hp["lr"] * (1.0 - update_idx / num_updates) if config.anneal_lr else hp["lr"]
            loss_fn = lambda p, mb: ppo_loss(p, policy, mb, hp, config.norm_adv, config.clip_value_loss)
            params, opt_state, info = sgd_epochs(
                sgd_key, state.params, state.opt_state, batch, loss_fn, optimizer, lr,
                config.update_epochs, config.num_minibatches,
            )
            ep_return, ep_length, episodes = finished_episode_stats(traj)
            metrics = PPOMetrics(
                env_steps=(update_idx + 1) * config.steps_per_update,
                episode_return=ep_return,
                episode_length=ep_length,
                episodes=episodes.astype(jnp.float32),
                policy_loss=info.policy_loss,
                value_loss=info.value_loss,
                entropy=info.entropy,
                approx_kl=info.approx_kl,
                clip_frac=info.clip_frac,
                explained_var=explained_variance(value, target),
                lr=jnp.asarray(lr, jnp.float32),
            )
            maybe_report(callback, run_id, update_idx, num_updates, metrics)
            return TrainState(params, opt_state, env_carry, key), metrics

        state, metrics = jax.lax.scan(update, state, jnp.arange(num_updates))
        return TrainOutput(state, metrics)

    return train
