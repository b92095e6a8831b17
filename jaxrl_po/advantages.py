"""Advantage estimators: GAE for PPO (truncation-correct) and group-relative ones for GRPO."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(
    reward: jax.Array,
    value: jax.Array,
    next_value: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: float | jax.Array,
    gae_lambda: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over a time-major rollout.

    Args:
      reward: f32[T, B] reward of step t.
      value: f32[T, B] V(s_t).
      next_value: f32[T, B] V of the observation step t reached, *before* any
        auto-reset (gymnax's ``final_observation``). On a truncated step this is
        the bootstrap; on a terminated step it is ignored.
      terminated: bool[T, B] the episode ended in a terminal state at step t.
      done: bool[T, B] terminated or truncated: the next step starts a new episode.

    Returns:
      (advantage, target): f32[T, B] each, target = advantage + value.

    Only ``terminated`` cuts the return; ``done`` only stops the GAE trace from
    leaking into the next episode.
    """
    not_terminated = 1.0 - terminated.astype(jnp.float32)
    continues = 1.0 - done.astype(jnp.float32)
    delta = reward + gamma * not_terminated * next_value - value

    def backward(carry: jax.Array, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        delta_t, continues_t = x
        carry = delta_t + gamma * gae_lambda * continues_t * carry
        return carry, carry

    _, advantage = jax.lax.scan(
        backward, jnp.zeros_like(delta[0]), (delta, continues), reverse=True, unroll=8
    )
    return advantage, advantage + value


# Group-relative advantages (GRPO). Arrays are group-major: [G, K] per episode or
# [G, K, H] per step, for G groups of K members and H time steps.
ZERO_SPREAD = 1e-6  # groups whose returns differ by less than this carry no signal


def group_spread(returns: jax.Array) -> jax.Array:
    """returns: f32[G, K] -> f32[G] std within each group (ddof=1)."""
    return returns.std(axis=1, ddof=1)


def carries_no_signal(returns: jax.Array) -> jax.Array:
    """returns: f32[G, K] -> bool[G], True where a group's returns all agree (std below ZERO_SPREAD).

    The std is taken relative to the first member: K equal returns of -1234.5
    then give exactly 0, where the plain std gives the rounding of their mean
    (about 1e-4, enough to pass the threshold and be scaled up to +-1).
    """
    return group_spread(returns - returns[:, :1]) < ZERO_SPREAD


def outcome_advantage(returns: jax.Array, scale: str, eps: float = 1e-8) -> jax.Array:
    """DeepSeekMath outcome supervision: each episode's return normalised within its group.

    returns: f32[G, K] -> f32[G, K]. ``scale``: "group" (÷ group std, ddof=1),
    "batch" (÷ std of all centred returns) or "none". Zero-spread groups get 0.
    """
    centred = returns - returns.mean(axis=1, keepdims=True)
    spread = group_spread(returns)[:, None]
    if scale == "group":
        advantage = centred / (spread + eps)
    elif scale == "batch":
        advantage = centred / (centred.std() + eps)
    else:
        advantage = centred
    return jnp.where(carries_no_signal(returns)[:, None], 0.0, advantage)


def return_to_go(reward: jax.Array, gamma: float | jax.Array) -> jax.Array:
    """reward: f32[..., H] -> f32[..., H] with G_t = sum_{s >= t} gamma^(s-t) r_s."""

    def backward(carry, r):
        carry = r + gamma * carry
        return carry, carry

    rewards_time_major = jnp.moveaxis(reward, -1, 0)
    _, rtg = jax.lax.scan(backward, jnp.zeros_like(rewards_time_major[0]), rewards_time_major, reverse=True)
    return jnp.moveaxis(rtg, 0, -1)


def rtg_advantage(
    reward: jax.Array, alive: jax.Array, gamma: float | jax.Array, scale: str, eps: float = 1e-8
) -> jax.Array:
    """Per-step return-to-go minus the leave-one-out mean of the other members' at the same step.

    reward, alive: [G, K, H] -> f32[G, K, H] (0 where not alive). A member whose
    episode has ended contributes a return-to-go of 0 to the others' baseline.
    ``scale``: "group" (÷ RMS of the group's alive values), "batch" (÷ RMS over
    all alive steps) or "none". Groups whose episode returns have zero spread get 0,
    and count as zeros in the batch RMS, as in ``outcome_advantage``.
    """
    mask = alive.astype(jnp.float32)
    rtg = return_to_go(reward * mask, gamma)
    group_size = reward.shape[1]
    baseline = (rtg.sum(axis=1, keepdims=True) - rtg) / (group_size - 1)
    centred = (rtg - baseline) * mask
    no_signal = carries_no_signal((reward * mask).sum(axis=2))[:, None, None]
    if scale == "group":
        rms = jnp.sqrt(jnp.square(centred).sum(axis=(1, 2)) / jnp.maximum(mask.sum(axis=(1, 2)), 1.0))
        centred = centred / (rms[:, None, None] + eps)
    elif scale == "batch":
        rms = jnp.sqrt(jnp.square(jnp.where(no_signal, 0.0, centred)).sum() / jnp.maximum(mask.sum(), 1.0))
        centred = centred / (rms + eps)
    return jnp.where(no_signal, 0.0, centred)
