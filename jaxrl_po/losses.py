"""Loss terms, each a pure function of arrays so it can be tested alone."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def clipped_surrogate(
    log_ratio: jax.Array, advantage: jax.Array, eps_low: jax.Array, eps_high: jax.Array
) -> jax.Array:
    """Per-sample PPO surrogate loss ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A)``.

    log_ratio, advantage: f32[N] -> f32[N].
    """
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return -jnp.minimum(ratio * advantage, clipped * advantage)


def value_loss(
    value: jax.Array, old_value: jax.Array, target: jax.Array, clip_eps: jax.Array | None
) -> jax.Array:
    """Per-sample ``0.5 (V - target)^2``; with ``clip_eps`` the PPO2 pessimistic clipped form.

    value, old_value, target: f32[N] -> f32[N].
    """
    unclipped = jnp.square(value - target)
    if clip_eps is None:
        return 0.5 * unclipped
    clipped_value = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(unclipped, jnp.square(clipped_value - target))


def approx_kl(log_ratio: jax.Array) -> jax.Array:
    """Per-sample k3 estimate of KL(old || new) from ``log(pi_new / pi_old)``: ``(r - 1) - log r``."""
    return jnp.expm1(log_ratio) - log_ratio


def normalize(x: jax.Array, eps: float = 1e-8) -> jax.Array:
    return (x - x.mean()) / (x.std() + eps)


class PPOBatch(NamedTuple):
    """Flat experience for SGD; leading axis N = num_steps * num_envs."""

    obs: jax.Array  # f32[N, D]
    action: jax.Array  # i32[N] | f32[N, A]
    log_prob: jax.Array  # f32[N] under the policy that acted
    value: jax.Array  # f32[N] V_old(s)
    advantage: jax.Array  # f32[N]
    target: jax.Array  # f32[N] return target for the critic


class PPOLossInfo(NamedTuple):
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_frac: jax.Array


def ppo_loss(
    params,
    policy,
    batch: PPOBatch,
    hp: dict[str, jax.Array],
    clip_value_loss: bool,
) -> tuple[jax.Array, PPOLossInfo]:
    """Clipped surrogate + vf_coef * value loss - ent_coef * entropy, averaged over the batch.

    A mean of per-sample terms, so it can be computed over pieces of a batch and
    averaged (advantages arrive already normalised if that is wanted).
    """
    dist = policy.dist(params, batch.obs)
    log_ratio = dist.log_prob(batch.action) - batch.log_prob
    policy_loss = clipped_surrogate(log_ratio, batch.advantage, hp["clip_eps"], hp["clip_eps"]).mean()
    value = policy.value(params, batch.obs)
    v_loss = value_loss(value, batch.value, batch.target, hp["clip_eps"] if clip_value_loss else None).mean()
    entropy = dist.entropy().mean()
    total = policy_loss + hp["vf_coef"] * v_loss - hp["ent_coef"] * entropy
    info = PPOLossInfo(
        policy_loss=policy_loss,
        value_loss=v_loss,
        entropy=entropy,
        approx_kl=approx_kl(log_ratio).mean(),
        clip_frac=(jnp.abs(jnp.exp(log_ratio) - 1.0) > hp["clip_eps"]).mean(),
    )
    return total, info


# ---- GRPO ---------------------------------------------------------------------
KL_LOG_RATIO_MAX = 20.0
"""k3's ``log(pi_ref/pi)`` is capped here: its exp overflows float32 above 88, and a
narrow Gaussian policy (small log-std) reaches that far from its reference. The
estimate then saturates (at about 4.9e8 per step) instead of becoming inf, and
``kl_coef = 0`` leaves training exactly as without the term (0 * inf would be NaN)."""


def kl_k3(log_prob: jax.Array, ref_log_prob: jax.Array) -> jax.Array:
    """Per-step k3 estimator of KL(pi || pi_ref): ``pi_ref/pi - log(pi_ref/pi) - 1`` (>= 0).

    log_prob, ref_log_prob: f32[...] of actions sampled from pi -> f32[...]; the
    log-ratio is capped at :data:`KL_LOG_RATIO_MAX` (no gradient beyond it).
    """
    log_r = jnp.minimum(ref_log_prob - log_prob, KL_LOG_RATIO_MAX)
    return jnp.expm1(log_r) - log_r


def sequence_log_ratio(log_ratio: jax.Array, mask: jax.Array) -> jax.Array:
    """GSPO: per-episode mean log-ratio over alive steps, broadcast back to the steps.

    log_ratio, mask: [..., H] -> f32[..., H]; exp of it is the sequence ratio.
    """
    length = jnp.maximum(mask.sum(axis=-1, keepdims=True), 1.0)
    mean = (log_ratio * mask).sum(axis=-1, keepdims=True) / length
    return jnp.broadcast_to(mean, log_ratio.shape)


def aggregate(
    per_step: jax.Array,
    mask: jax.Array,
    loss_type: str,
    alive_per_minibatch: jax.Array,
    horizon: int | None = None,
) -> jax.Array:
    """Reduce per-step losses f32[G, K, H] over alive steps (mask f32[G, K, H]).

    grpo: mean over episodes of each episode's mean over its alive steps;
    bnpo: sum / alive steps in this minibatch;
    dapo: sum / alive steps per minibatch of the whole update (one weight per step across minibatches);
    dr_grpo: sum / (episodes x horizon), a constant normaliser (horizon defaults to H).
    """
    total = (per_step * mask).sum()
    if loss_type == "grpo":
        per_episode = (per_step * mask).sum(axis=-1) / jnp.maximum(mask.sum(axis=-1), 1.0)
        return per_episode.mean()
    if loss_type == "bnpo":
        return total / jnp.maximum(mask.sum(), 1.0)
    if loss_type == "dapo":
        return total / jnp.maximum(alive_per_minibatch, 1.0)
    if loss_type == "dr_grpo":
        return total / (per_step.shape[0] * per_step.shape[1] * (horizon or per_step.shape[2]))
    raise ValueError(f"unknown loss_type {loss_type!r}")


class GRPOBatch(NamedTuple):
    """Experience for GRPO's SGD, group-major ``[G, K, H, ...]`` (whole groups are shuffled)."""

    obs: jax.Array  # f32[G, K, H, D] (normalised if on)
    action: jax.Array
    log_prob: jax.Array  # f32[G, K, H] under the acting policy
    ref_log_prob: jax.Array  # f32[G, K, H] under the reference policy
    advantage: jax.Array  # f32[G, K, H]
    mask: jax.Array  # f32[G, K, H] 1 on alive steps


class GRPOLossInfo(NamedTuple):
    policy_loss: jax.Array
    kl_ref: jax.Array
    approx_kl: jax.Array
    entropy: jax.Array
    clip_frac_low: jax.Array
    clip_frac_high: jax.Array


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return (x * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def grpo_loss(
    params,
    policy,
    batch: GRPOBatch,
    hp: dict[str, jax.Array],
    loss_type: str,
    importance_sampling: str,
    alive_per_minibatch: jax.Array,
    horizon: int | None = None,
) -> tuple[jax.Array, GRPOLossInfo]:
    """Clipped surrogate + beta * KL_k3(pi || pi_ref) - c_ent * entropy, aggregated by ``loss_type``."""
    dist = policy.dist(params, batch.obs)
    log_prob = dist.log_prob(batch.action)
    log_ratio = log_prob - batch.log_prob
    if importance_sampling == "sequence":
        log_ratio = sequence_log_ratio(log_ratio, batch.mask)
    eps_low, eps_high = hp["clip_eps"], hp["clip_eps_high"]
    surrogate = clipped_surrogate(log_ratio, batch.advantage, eps_low, eps_high)
    kl = kl_k3(log_prob, batch.ref_log_prob)
    entropy = dist.entropy()
    per_step = surrogate + hp["kl_coef"] * kl - hp["ent_coef"] * entropy
    loss = aggregate(per_step, batch.mask, loss_type, alive_per_minibatch, horizon)
    ratio = jnp.exp(log_ratio)
    info = GRPOLossInfo(
        policy_loss=aggregate(surrogate, batch.mask, loss_type, alive_per_minibatch, horizon),
        kl_ref=masked_mean(kl, batch.mask),
        approx_kl=masked_mean(approx_kl(log_prob - batch.log_prob), batch.mask),
        entropy=masked_mean(entropy, batch.mask),
        # The clip binds where it removes the gradient: low side for A < 0, high side for A > 0.
        clip_frac_low=masked_mean((ratio < 1.0 - eps_low) & (batch.advantage < 0), batch.mask),
        clip_frac_high=masked_mean((ratio > 1.0 + eps_high) & (batch.advantage > 0), batch.mask),
    )
    return loss, info
