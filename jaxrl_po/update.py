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


def pieces_for(num_samples: int, piece_size: int) -> int:
    """How many equal pieces to split ``num_samples`` into so each has at most ``piece_size``.

    The fewest that divide ``num_samples`` evenly; 1 (no split) when ``piece_size``
    is 0, already enough, or the only even split gives pieces under a quarter of it.
    """
    if piece_size <= 0 or num_samples <= piece_size:
        return 1
    pieces = next(d for d in range(-(-num_samples // piece_size), num_samples + 1) if num_samples % d == 0)
    return pieces if num_samples // pieces >= piece_size // 4 else 1


def grad_in_pieces(loss_fn: Callable[[Any, Any], tuple[jax.Array, Any]], num_pieces: int) -> Callable:
    """``jax.grad(loss_fn, has_aux=True)``, computed over ``num_pieces`` pieces of the batch and averaged.

    For a loss (and info) that is a mean over the batch's leading axis N this is
    the same gradient up to float rounding, with N / num_pieces samples' activations
    alive at a time: on CPU they then stay in cache (SGD on 65536-sample minibatches
    in pieces of 1024: 1.8x faster on one core, 1.2x on two; README "Throughput").
    Piece j takes samples j, j + P, j + 2P, ...,
    so the sample axis stays the major one and keeps its split over "envs" devices.
    """
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if num_pieces == 1:
        return grad_fn
    grad_fn = jax.jit(grad_fn)  # traced once: eval_shape's trace is reused by the scan body

    def summed(params: Any, batch: Any) -> tuple[Any, Any]:
        split = lambda x: jnp.moveaxis(x.reshape((-1, num_pieces) + x.shape[1:]), 1, 0)  # [N] -> [P, N/P]
        pieces = jax.tree_util.tree_map(split, batch)

        def add(total, piece):
            out = grad_fn(params, shard_envs(piece))
            return jax.tree_util.tree_map(jnp.add, total, out), None

        shapes = jax.eval_shape(grad_fn, params, jax.tree_util.tree_map(lambda x: x[0], pieces))
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        total, _ = jax.lax.scan(add, zeros, pieces)
        return jax.tree_util.tree_map(lambda x: x / num_pieces, total)

    return summed


def random_permutation(key: jax.Array, n: int) -> jax.Array:
    """i32[n]: a uniformly random permutation of 0..n-1, as ``jax.random.permutation(key, n)`` gives.

    Each round sorts one uint32 array whose high bits are random and whose low
    ``ceil(log2 n)`` bits are the index: a single-operand integer sort, which
    XLA's CPU runtime does natively, 4-10x faster than the two-operand
    (key, index) sort behind ``jax.random.permutation`` (README "Throughput").
    A round orders by its random bits and keeps the previous order among ties,
    so r rounds order by r x (32 - index bits) random bits; like
    ``jax.random.permutation`` we take enough rounds for 3 log2(n) of them,
    which makes a tie on all of them (the only bias) negligible. Above 2**24
    items too few random bits are left per round, and ``jax.random.permutation``
    is used.
    """
    index_bits = max(1, (n - 1).bit_length())
    if index_bits > 24:
        return jax.random.permutation(key, n).astype(jnp.int32)
    random_bits = 32 - index_bits
    rounds = -(-3 * index_bits // random_bits)
    positions = jnp.arange(n, dtype=jnp.uint32)
    order = positions
    for round_key in jax.random.split(key, rounds):
        high = jax.random.bits(round_key, (n,), jnp.uint32) >> index_bits << index_bits
        order = order[jnp.sort(high | positions) & ((1 << index_bits) - 1)]
    return order.astype(jnp.int32)


def sgd_epochs(
    key: jax.Array,
    params: Any,
    opt_state: Any,
    batch: Any,
    grad_fn: Callable[[Any, Any], tuple[Any, Any]],
    optimizer: optax.GradientTransformation,
    lr: jax.Array,
    num_epochs: int,
    num_minibatches: int,
) -> tuple[Any, Any, Any, jax.Array]:
    """``num_epochs`` shuffled passes of ``num_minibatches`` gradient steps each.

    Args:
      batch: pytree whose leaves share a leading axis N (the units that are
        shuffled: single steps for PPO, whole groups for GRPO).
      grad_fn: (params, minibatch) -> (gradient, info pytree of scalars), e.g.
        ``jax.grad(loss_fn, has_aux=True)`` or :func:`grad_in_pieces`.

    Returns:
      (params, opt_state, info, grad_norm): info and the global gradient norm
      (before clipping) averaged over every gradient step.
    """
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]

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
        order = random_permutation(epoch_key, n).reshape(num_minibatches, n // num_minibatches)
        return jax.lax.scan(minibatch_step, carry, order)

    (params, opt_state), (info, grad_norm) = jax.lax.scan(
        epoch, (params, opt_state), jax.random.split(key, num_epochs)
    )
    return params, opt_state, jax.tree_util.tree_map(jnp.mean, info), grad_norm.mean()
