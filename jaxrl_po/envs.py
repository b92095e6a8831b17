"""gymnax environments behind a small batched interface.

:class:`VecEnv` steps ``B`` copies of one gymnax environment with ``vmap``.
Observations are flattened to ``f32[B, obs_dim]``; continuous actions are
clipped to the action bounds before they reach the environment (the policy's
log-probabilities are of the unclipped sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces

from jaxrl_po.config import ConfigError


def check_env_name(name: str) -> None:
    if name not in gymnax.registered_envs:
        raise ConfigError(
            "env", f"unknown environment {name!r}; valid: {', '.join(gymnax.registered_envs)}"
        )


def check_image_observations(name: str, num_conv_layers: int) -> None:
    """A conv torso needs (H, W, C) observations larger than its unpadded 3x3 kernels shrink away."""
    shape = make_vec_env(name, 1).obs_shape
    if len(shape) != 3:
        raise ConfigError("conv_channels", f"needs image observations (H, W, C); {name} observations have shape {shape}")
    if min(shape[:2]) <= 2 * num_conv_layers:
        raise ConfigError("conv_channels", f"{num_conv_layers} unpadded 3x3 conv layers do not fit {name}'s "
                                           f"{shape[0]}x{shape[1]} observations")


class EnvStep(NamedTuple):
    """One batched transition (``B`` environments, auto-reset on done).

    obs: f32[B, D] observation to act on next (a reset one where ``done``);
    final_obs: f32[B, D] observation reached by this step, before any reset;
    reward: f32[B]; terminated, truncated: bool[B].
    """

    obs: jax.Array
    state: Any
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array


@dataclass(frozen=True)
class ActionSpec:
    """What the policy must output: ``num_actions`` logits, or a box of ``shape``."""

    discrete: bool
    num_actions: int = 0
    shape: tuple[int, ...] = ()
    low: Any = None  # f32[*shape] bounds (continuous only)
    high: Any = None

    @property
    def dim(self) -> int:
        return self.num_actions if self.discrete else int(np.prod(self.shape))


@dataclass(frozen=True, eq=False)
class VecEnv:
    """``num_envs`` copies of a gymnax environment, stepped together."""

    env: Any
    params: Any
    num_envs: int

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """The environment's own observation shape (before flattening), e.g. (10, 10, 4) for MinAtar."""
        return tuple(self.env.observation_space(self.params).shape)

    @property
    def obs_dim(self) -> int:
        return int(np.prod(self.obs_shape))

    @property
    def max_episode_steps(self) -> int:
        return int(self.params.max_steps_in_episode)

    @property
    def action_spec(self) -> ActionSpec:
        with jax.ensure_compile_time_eval():  # some envs build their bounds with jnp ops; they must be concrete
            space = self.env.action_space(self.params)
        if isinstance(space, spaces.Discrete):
            return ActionSpec(discrete=True, num_actions=int(space.n))
        if isinstance(space, spaces.Box):
            shape = tuple(space.shape)
            low = np.broadcast_to(np.asarray(space.low, np.float32), shape)
            high = np.broadcast_to(np.asarray(space.high, np.float32), shape)
            return ActionSpec(discrete=False, shape=shape, low=low, high=high)
        raise ConfigError("env", f"action space {type(space).__name__} is not supported (Discrete or Box)")

    def reset(self, keys: jax.Array) -> tuple[jax.Array, Any]:
        """keys: key[B] -> (obs f32[B, D], state). Equal keys give equal starts."""
        obs, state = jax.vmap(self.env.reset, in_axes=(0, None))(keys, self.params)
        return _flat(obs, self.num_envs), state

    def step(self, keys: jax.Array, state: Any, action: jax.Array) -> EnvStep:
        """keys: key[B]; action: i32[B] or f32[B, *shape] -> EnvStep (auto-reset)."""
        spec = self.action_spec
        if not spec.discrete:
            action = jnp.clip(action.reshape((self.num_envs,) + spec.shape), spec.low, spec.high)
        obs, state, reward, terminated, truncated, info = jax.vmap(
            self.env.step, in_axes=(0, 0, 0, None)
        )(keys, state, action, self.params)
        return EnvStep(
            obs=_flat(obs, self.num_envs),
            state=state,
            reward=reward.astype(jnp.float32),
            terminated=terminated,
            # gymnax marks a step that both terminates and hits the limit as both; the
            # termination wins (no bootstrap), so truncation here means "cut, not ended".
            truncated=jnp.logical_and(truncated, jnp.logical_not(terminated)),
            final_obs=_flat(info["final_observation"], self.num_envs),
        )


def make_vec_env(name: str, num_envs: int) -> VecEnv:
    check_env_name(name)
    try:
        env, params = gymnax.make(name)
    except OSError as err:  # MNISTBandit downloads its data when it is made
        raise ConfigError("env", f"gymnax could not make {name}: {err}") from None
    return VecEnv(env=env, params=params, num_envs=num_envs)


def _flat(obs: jax.Array, num_envs: int) -> jax.Array:
    return obs.reshape(num_envs, -1).astype(jnp.float32)


class RunningMeanStd(NamedTuple):
    """Running mean and variance of a stream of ``f32[..., *shape]`` batches."""

    mean: jax.Array  # f32[*shape]
    var: jax.Array  # f32[*shape]
    count: jax.Array  # f32[]

    @staticmethod
    def create(shape: tuple[int, ...]) -> "RunningMeanStd":
        # A tiny prior count keeps the first merge well defined and the start at N(0, 1).
        return RunningMeanStd(jnp.zeros(shape), jnp.ones(shape), jnp.float32(1e-4))

    def update(self, batch: jax.Array, weight: jax.Array | None = None) -> "RunningMeanStd":
        """Merge ``batch`` (f32[N, *shape]) with Chan et al.'s parallel formula.

        ``weight`` (f32[N], 0/1) leaves out rows, e.g. padding after an episode ended.
        """
        w = jnp.ones(batch.shape[:1], jnp.float32) if weight is None else weight.astype(jnp.float32)
        w = w.reshape(w.shape + (1,) * (batch.ndim - 1))
        n = w.sum()
        safe_n = jnp.maximum(n, 1.0)
        batch_mean = (w * batch).sum(axis=0) / safe_n
        batch_var = (w * jnp.square(batch - batch_mean)).sum(axis=0) / safe_n
        total = self.count + n
        delta = batch_mean - self.mean
        mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + jnp.square(delta) * self.count * n / total
        return RunningMeanStd(mean, m2 / total, total)

    def normalize(self, x: jax.Array, clip: float = 10.0) -> jax.Array:
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)
