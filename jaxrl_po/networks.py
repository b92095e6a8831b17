"""Actor and critic networks (flax linen) and the policy distributions they define.

Each network is an optional conv torso (for image observations such as
MinAtar's 10x10xC grids) followed by an MLP. Observations arrive flattened
(``f32[..., D]``); the conv torso restores their ``(H, W, C)`` shape itself.

Orthogonal initialisation: sqrt(2) on hidden layers, 0.01 on the policy head
(near-uniform first policy), 1.0 on the value head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_po.envs import ActionSpec

ACTIVATIONS: dict[str, Callable] = {"tanh": nn.tanh, "relu": nn.relu}


def orthogonal(scale: float) -> Callable:
    """Orthogonal kernel initialiser, distributed like flax's ``initializers.orthogonal``.

    Gram-Schmidt on a Gaussian matrix gives the Q of its QR decomposition with a
    positive R diagonal, which is what flax's sign-corrected QR returns. It is
    written with plain JAX ops because LAPACK's QR under ``vmap`` (one init per
    seed) hangs intermittently on CPU in jaxlib 0.10 (cf. jax-ml/jax#24219).
    """

    def init(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
        rows, cols = shape
        n, m = max(rows, cols), min(rows, cols)
        gaussian = jax.random.normal(key, (n, m), jnp.float32)

        def add_column(j, q):
            v = gaussian[:, j]
            for _ in range(2):  # orthogonalise twice: "twice is enough" for float32
                v = v - q @ (q.T @ v)
            return q.at[:, j].set(v / jnp.linalg.norm(v))

        q = jax.lax.fori_loop(0, m, add_column, jnp.zeros((n, m), jnp.float32))
        return (scale * (q if rows >= cols else q.T)).astype(dtype)

    return init


class Conv3x3(nn.Module):
    """An unpadded 3x3, stride-1 convolution written as patch extraction + one Dense layer.

    x: f32[N, H, W, C] -> f32[N, H-2, W-2, features]. Not ``nn.Conv``: under
    ``vmap`` over seeds each run has its own kernel, which XLA lowers to a grouped
    convolution that runs about 100x slower on CPU; a batched matmul does not.
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h, w = x.shape[-3] - 2, x.shape[-2] - 2
        patches = jnp.concatenate([x[..., i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=-1)
        return nn.Dense(self.features, kernel_init=orthogonal(np.sqrt(2.0)))(patches)


class MLP(nn.Module):
    """[3x3 conv layers ->] dense layers with ``activation`` between them -> ``out_dim`` linear outputs.

    x: f32[..., D] -> f32[..., out_dim]. With ``conv_channels`` the input is
    reshaped to ``obs_shape`` (H, W, C) and passed through one unpadded 3x3 conv
    per entry (stride 1, as in MinAtar's reference network), then flattened.
    """

    hidden_sizes: Sequence[int]
    activation: str
    out_dim: int
    out_scale: float
    conv_channels: Sequence[int] = ()
    obs_shape: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        if self.conv_channels:
            batch = x.shape[:-1]
            x = x.reshape((-1,) + tuple(self.obs_shape))
            for channels in self.conv_channels:
                x = act(Conv3x3(channels)(x))
            x = x.reshape(batch + (-1,))
        for width in self.hidden_sizes:
            x = act(nn.Dense(width, kernel_init=orthogonal(np.sqrt(2.0)))(x))
        return nn.Dense(self.out_dim, kernel_init=orthogonal(self.out_scale))(x)


class GaussianHead(nn.Module):
    """Mean from an MLP and a state-independent log standard deviation."""

    hidden_sizes: Sequence[int]
    activation: str
    action_dim: int
    log_std_init: float
    conv_channels: Sequence[int] = ()
    obs_shape: tuple[int, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = MLP(self.hidden_sizes, self.activation, self.action_dim, 0.01, self.conv_channels, self.obs_shape)(x)
        log_std = self.param("log_std", nn.initializers.constant(self.log_std_init), (self.action_dim,))
        return mean, log_std


@dataclass(frozen=True, eq=False)
class Policy:
    """Pure functions over a params dict ``{"actor": ..., "critic": ...}``.

    ``critic`` is absent for critic-free algorithms (GRPO).
    """

    action_spec: ActionSpec
    actor: nn.Module
    critic: nn.Module | None

    def init(self, key: jax.Array, obs_dim: int) -> dict[str, Any]:
        actor_key, critic_key = jax.random.split(key)
        dummy = jnp.zeros((1, obs_dim), jnp.float32)
        params = {"actor": self.actor.init(actor_key, dummy)}
        if self.critic is not None:
            params["critic"] = self.critic.init(critic_key, dummy)
        return params

    def dist(self, params: dict[str, Any], obs: jax.Array) -> distrax.Distribution:
        """obs: f32[..., D] -> distribution over actions with batch shape [...]."""
        out = self.actor.apply(params["actor"], obs)
        if self.action_spec.discrete:
            return distrax.Categorical(logits=out)
        mean, log_std = out
        return distrax.MultivariateNormalDiag(mean, jnp.broadcast_to(jnp.exp(log_std), mean.shape))

    def value(self, params: dict[str, Any], obs: jax.Array) -> jax.Array:
        """obs: f32[..., D] -> f32[...]."""
        return self.critic.apply(params["critic"], obs)[..., 0]

    def greedy_action(self, params: dict[str, Any], obs: jax.Array) -> jax.Array:
        """The mode: argmax for discrete actions, the mean for continuous ones."""
        return self.dist(params, obs).mode()


def policy_for(config: Any, env: Any, with_critic: bool = True) -> Policy:
    """The policy a config describes (torso, widths, activation) for a :class:`VecEnv`'s spaces."""
    return make_policy(env.action_spec, config.hidden_sizes, config.activation, config.log_std_init,
                       with_critic, config.conv_channels, env.obs_shape)


def make_policy(
    action_spec: ActionSpec,
    hidden_sizes: Sequence[int],
    activation: str,
    log_std_init: float = 0.0,
    with_critic: bool = True,
    conv_channels: Sequence[int] = (),
    obs_shape: tuple[int, ...] = (),
) -> Policy:
    """Actor (and critic) with the same torso shape; ``conv_channels`` needs ``obs_shape`` = (H, W, C)."""
    hidden, conv, shape = tuple(hidden_sizes), tuple(conv_channels), tuple(obs_shape)
    if action_spec.discrete:
        actor = MLP(hidden, activation, action_spec.num_actions, 0.01, conv, shape)
    else:
        actor = GaussianHead(hidden, activation, action_spec.dim, log_std_init, conv, shape)
    critic = MLP(hidden, activation, 1, 1.0, conv, shape) if with_critic else None
    return Policy(action_spec=action_spec, actor=actor, critic=critic)
