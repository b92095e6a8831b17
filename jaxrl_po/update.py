"""Epochs of minibatch SGD over a batch of experience, shared by PPO and GRPO."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from jaxrl_po.layout import shard_envs


def make_optimizer(max_grad_norm: jax.Array) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (eps 1e-5); the learning rate is applied in :func:`sgd_epochs`."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.scale_by_adam(eps=1e-5))


def sgd_epochs(
    key: jax.Array,
    params: Any,
    opt_state: Any,
    batch: Any,
    loss_fn: Callable[[Any, Any], tuple[jax.Array, Any]],
    optimizer: optax.GradientTransformation,
    lr: jax.Array,
    num_epochs: int,
    num_minibatches: int,
) -> tuple[Any, Any, Any]:
    """``num_epochs`` shuffled passes of ``num_minibatches`` gradient steps each.

    Args:
      batch: pytree whose leaves share a leading axis N (the units that are
        shuffled: single steps for PPO, whole groups for GRPO).
      loss_fn: (params, minibatch) -> (loss, info pytree of scalars).

    Returns:
      (params, opt_state, info, grad_norm): info and the global gradient norm
      (before clipping) averaged over every gradient step.
    """
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    grad_fn = jax.grad(loss_fn, has_aux=True)

    def minibatch_step(carry, idx: jax.Array):
        params, opt_state = carry
        # Gather one minibatch at a time instead of a shuffled copy of the whole batch.
        # Split over the "envs" devices: each computes its share of the gradient (GSPMD all-reduces it).
        minibatch = shard_envs(jax.tree_util.tree_map(lambda x: x[idx], batch))
        grads, info = grad_fn(params, minibatch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
        return (params, opt_state), (info, optax.tree.norm(grads))

    def epoch(carry, epoch_key: jax.Array):
        order = jax.random.permutation(epoch_key, n).reshape(num_minibatches, n // num_minibatches)
        return jax.lax.scan(minibatch_step, carry, order)

    (params, opt_state), (info, grad_norm) = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(key, num_epochs)
    )
    return params, opt_state, jax.tree_util.tree_map(jnp.mean, info), grad_norm.mean()
