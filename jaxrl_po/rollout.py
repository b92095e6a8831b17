"""Collecting experience: a ``lax.scan`` of policy sampling and batched env steps."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_po.envs import RunningMeanStd, VecEnv
from jaxrl_po.layout import shard_envs
from jaxrl_po.loop import batched_under_vmap
from jaxrl_po.networks import Policy

# Measured on the 2-core CPU (benchmarks/throughput.py): see README "Throughput".
ROLLOUT_UNROLL = 1


class EnvCarry(NamedTuple):
    """Environment-side state carried from one update to the next (``B`` envs)."""

    state: Any  # gymnax env states, batched [B]
    obs: jax.Array  # f32[B, D] raw observation to act on
    obs_stats: RunningMeanStd  # observation normaliser (unused when off)
    return_stats: RunningMeanStd  # running std of the discounted return (reward scaling)
    discounted_return: jax.Array  # f32[B]
    episode_return: jax.Array  # f32[B] raw return of the running episode
    episode_length: jax.Array  # i32[B]


class Transition(NamedTuple):
    """A time-major rollout, each field ``[T, B, ...]``."""

    obs: jax.Array  # f32[T, B, D] (normalised if on)
    action: jax.Array  # i32[T, B] | f32[T, B, A] (unclipped sample)
    log_prob: jax.Array  # f32[T, B]
    reward: jax.Array  # f32[T, B] (scaled if reward scaling is on)
    terminated: jax.Array  # bool[T, B]
    done: jax.Array  # bool[T, B] terminated or truncated
    final_obs: jax.Array  # f32[T, B, D] observation reached, before auto-reset
    episode_return: jax.Array  # f32[T, B] raw return of the episode ending at t (0 elsewhere)
    episode_length: jax.Array  # i32[T, B] its length (0 elsewhere)


def shard_env_fields(carry: EnvCarry) -> EnvCarry:
    """``carry`` with its per-env fields split over the "envs" devices; normaliser statistics stay replicated."""
    per_env = shard_envs(carry._replace(obs_stats=None, return_stats=None))
    return per_env._replace(obs_stats=carry.obs_stats, return_stats=carry.return_stats)


def init_env_carry(key: jax.Array, env: VecEnv, normalize_obs: bool) -> EnvCarry:
    keys = jax.random.split(key, env.num_envs)
    obs, state = env.reset(keys)
    obs_stats = RunningMeanStd.create((env.obs_dim,))
    if normalize_obs:
        obs_stats = obs_stats.update(obs)
    zeros = jnp.zeros(env.num_envs, jnp.float32)
    return shard_env_fields(EnvCarry(
        state=state,
        obs=obs,
        obs_stats=obs_stats,
        return_stats=RunningMeanStd.create(()),
        discounted_return=zeros,
        episode_return=zeros,
        episode_length=jnp.zeros(env.num_envs, jnp.int32),
    ))


def rollout(
    key: jax.Array,
    carry: EnvCarry,
    params: Any,
    policy: Policy,
    env: VecEnv,
    num_steps: int,
    normalize_obs: bool,
    scale_reward: bool,
    gamma: jax.Array,
) -> tuple[EnvCarry, Transition]:
    """Run ``num_steps`` steps of all envs with the current policy (auto-resetting).

    Normaliser statistics are updated step by step with the observations (and
    discounted returns) that arrive, as gym's ``NormalizeObservation`` does.
    """
    norm = (lambda stats, x: stats.normalize(x)) if normalize_obs else (lambda stats, x: x)

    def step(c: EnvCarry, step_key: jax.Array) -> tuple[EnvCarry, Transition]:
        keys = jax.random.split(step_key, env.num_envs + 1)
        obs = norm(c.obs_stats, c.obs)
        action, log_prob = policy.dist(params, obs).sample_and_log_prob(seed=keys[0])
        out = env.step(keys[1:], c.state, action)
        done = jnp.logical_or(out.terminated, out.truncated)

        obs_stats = c.obs_stats.update(out.obs) if normalize_obs else c.obs_stats
        reward, return_stats = out.reward, c.return_stats
        discounted_return = c.discounted_return * gamma + out.reward
        if scale_reward:
            return_stats = return_stats.update(discounted_return)
            reward = reward / jnp.sqrt(return_stats.var + 1e-8)
        episode_return = c.episode_return + out.reward
        episode_length = c.episode_length + 1

        transition = Transition(
            obs=obs,
            action=action,
            log_prob=log_prob,
            reward=reward,
            terminated=out.terminated,
            done=done,
            final_obs=norm(obs_stats, out.final_obs),
            episode_return=jnp.where(done, episode_return, 0.0),
            episode_length=jnp.where(done, episode_length, 0),
        )
        new_carry = EnvCarry(
            state=out.state,
            obs=out.obs,
            obs_stats=obs_stats,
            return_stats=return_stats,
            discounted_return=jnp.where(done, 0.0, discounted_return),
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
        )
        return shard_env_fields(new_carry), shard_envs(transition)

    return jax.lax.scan(step, carry, jax.random.split(key, num_steps), unroll=ROLLOUT_UNROLL)


def finished_episode_stats(traj: Transition) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mean return, mean length, count) of episodes that ended in ``traj``; NaN means when none did."""
    count = traj.done.sum()
    safe = jnp.maximum(count, 1)
    mean_return = jnp.where(count > 0, traj.episode_return.sum() / safe, jnp.nan)
    mean_length = jnp.where(count > 0, traj.episode_length.sum() / safe, jnp.nan)
    return mean_return, mean_length, count


class Episodes(NamedTuple):
    """Whole episodes of ``B`` envs, time-major ``[H, B, ...]`` (H = chunks x chunk size)."""

    obs: jax.Array  # f32[H, B, D] raw observations
    action: jax.Array  # i32[H, B] | f32[H, B, A]
    log_prob: jax.Array  # f32[H, B] under the policy that acted
    reward: jax.Array  # f32[H, B]
    alive: jax.Array  # bool[H, B] step t belongs to the env's first episode (within the horizon)


def group_keys(key: jax.Array, num_groups: int, group_size: int) -> jax.Array:
    """key -> key[num_groups * group_size]: one key per group, repeated for its members."""
    return jnp.repeat(jax.random.split(key, num_groups), group_size, axis=0)


def episode_buffer_length(horizon: int, chunk_size: int) -> int:
    """Time steps of :func:`episode_rollout`'s buffer: whole chunks covering ``horizon``, a chunk
    never longer than the horizon (a longer one would only hold padding)."""
    chunk_size = min(chunk_size, horizon)
    return -(-horizon // chunk_size) * chunk_size


def episode_rollout(
    key: jax.Array,
    params: Any,
    policy: Policy,
    env: VecEnv,
    obs_stats: RunningMeanStd | None,
    group_size: int,
    horizon: int,
    chunk_size: int,
    shared_step_keys: bool,
    shared_reset: bool = True,
) -> tuple[Episodes, jax.Array]:
    """Reset every group of ``group_size`` envs to one start state and play until all episodes end.

    The horizon is run in chunks of ``chunk_size`` steps (at most ``horizon``); after a chunk in which
    every episode has ended (or the horizon is reached) the rollout stops, so
    padding costs at most one chunk. Steps after an env's first ``done`` (and
    steps past ``horizon``) have ``alive = False``.

    ``shared_reset=False`` gives every env its own start instead (an ablation).

    Returns (episodes, steps_run): steps_run is the number of time steps executed (i32[]).
    """
    num_envs = env.num_envs
    num_groups = num_envs // group_size
    chunk_size = min(chunk_size, horizon)
    num_chunks = episode_buffer_length(horizon, chunk_size) // chunk_size
    norm = (lambda x: x) if obs_stats is None else obs_stats.normalize
    reset_key, key = jax.random.split(key)
    reset_keys = group_keys(reset_key, num_groups, group_size) if shared_reset else jax.random.split(reset_key, num_envs)
    obs, state = env.reset(reset_keys)

    def step(carry, t):
        state, obs, alive, key = carry
        key, act_key, env_key = jax.random.split(key, 3)
        if shared_step_keys:
            env_keys = group_keys(env_key, num_groups, group_size)
        else:
            env_keys = jax.random.split(env_key, num_envs)
        action, log_prob = policy.dist(params, norm(obs)).sample_and_log_prob(seed=act_key)
        out = env.step(env_keys, state, action)
        alive = jnp.logical_and(alive, t < horizon)
        record = Episodes(obs, action, log_prob, out.reward, alive)
        still_alive = jnp.logical_and(alive, ~jnp.logical_or(out.terminated, out.truncated))
        return (*shard_envs((out.state, out.obs, still_alive)), key), shard_envs(record)

    def run_chunk(loop):
        chunk, carry, buffer = loop
        start = chunk * chunk_size
        carry, records = jax.lax.scan(step, carry, start + jnp.arange(chunk_size))
        buffer = jax.tree_util.tree_map(
            lambda b, r: jax.lax.dynamic_update_slice_in_dim(b, r, start, axis=0), buffer, records
        )
        return chunk + 1, carry, buffer

    def keep_going(loop):
        chunk, (_, _, alive, _), _ = loop
        return jnp.logical_and(chunk < num_chunks, alive.any())

    first = jax.eval_shape(lambda: step((state, obs, jnp.ones(num_envs, bool), key), 0)[1])
    buffer = shard_envs(jax.tree_util.tree_map(
        lambda x: jnp.zeros((num_chunks * chunk_size,) + x.shape, x.dtype), first
    ), axis=1)
    carry = (state, obs, jnp.ones(num_envs, bool), key)
    start = batched_under_vmap((jnp.int32(0), carry, buffer))  # each run stops on its own: see batched_under_vmap
    chunks_run, _, buffer = jax.lax.while_loop(keep_going, run_chunk, start)
    return buffer, chunks_run * chunk_size
