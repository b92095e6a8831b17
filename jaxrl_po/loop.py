"""The update loop shared by PPO and GRPO: compiled segments of updates.

An algorithm is three pure functions (:class:`Algorithm`). ``train(key)`` runs
the whole budget as one segment; the CLI runs the same compiled segment again
and again, a few updates at a time, and between segments reports progress,
streams metrics and saves checkpoints. Splitting a run into segments does not
change its results: every update is the same compiled loop body.

An update that produces a non-finite loss, gradient or parameter is not kept:
the run keeps its last good state, records what went wrong in ``nonfinite``
and stops (other runs in the same ``vmap`` carry on).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

NONFINITE_LOSS, NONFINITE_GRADIENT, NONFINITE_PARAMS = 1, 2, 4
NONFINITE_NAMES = {NONFINITE_LOSS: "loss", NONFINITE_GRADIENT: "gradient", NONFINITE_PARAMS: "parameters"}


class Algorithm(NamedTuple):
    """One algorithm as pure functions of a per-run state.

    The state is a NamedTuple with (at least) ``update``, ``env_steps`` and
    ``nonfinite`` (i32 scalars): updates done, env steps consumed and the
    :func:`nonfinite_code` that stopped the run (0 while healthy).
    """

    init: Callable[[jax.Array, dict], Any]  # (key, hparams) -> state
    update: Callable[[Any, dict], tuple[Any, Any]]  # (state, hparams) -> (state, metrics row of scalars)
    finished: Callable[[Any], jax.Array]  # state -> bool[]: budget spent
    max_updates: int  # upper bound on updates (the length of ``train``'s metric buffer)


class TrainOutput(NamedTuple):
    state: Any
    metrics: Any  # PPOMetrics | GRPOMetrics, each leaf [max_updates]; rows never run: env_steps 0, NaN


def nonfinite_code(loss_info: Any, grad_norm: jax.Array, params: Any) -> jax.Array:
    """i32[] bit mask: 1 a loss term, 2 the gradient, 4 a parameter is NaN/inf (0 when all finite)."""
    all_finite = lambda tree: jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))
    return (
        jnp.where(all_finite(loss_info), 0, NONFINITE_LOSS)
        + jnp.where(jnp.isfinite(grad_norm), 0, NONFINITE_GRADIENT)
        + jnp.where(all_finite(params), 0, NONFINITE_PARAMS)
    ).astype(jnp.int32)


def describe_nonfinite(code: int) -> str:
    """``5`` -> ``"loss and parameters"``."""
    names = [name for bit, name in NONFINITE_NAMES.items() if code & bit]
    return " and ".join(names) if names else "nothing"


def keep_if_finite(old_state: Any, new_state: Any, code: jax.Array) -> Any:
    """``new_state`` when ``code`` is 0, else ``old_state`` marked with ``code`` (the run stops there)."""
    ok = code == 0
    state = jax.tree_util.tree_map(lambda o, n: jax.lax.select(jnp.broadcast_to(ok, n.shape), n, o), old_state, new_state)
    return state._replace(nonfinite=code)


def empty_metrics(row_shape: Any, length: int) -> Any:
    """A buffer of ``length`` rows for rows like ``row_shape`` (scalar ShapeDtypeStructs): integers 0, floats NaN."""

    def column(s):
        fill = 0 if jnp.issubdtype(s.dtype, jnp.integer) else jnp.nan
        return jnp.full((length,), fill, s.dtype)

    return jax.tree_util.tree_map(column, row_shape)


def running(algo: Algorithm, state: Any) -> jax.Array:
    """bool[]: the run still has budget left and is healthy."""
    return jnp.logical_and(jnp.logical_not(algo.finished(state)), state.nonfinite == 0)


@jax.custom_batching.custom_vmap
def batched_under_vmap(tree: Any) -> Any:
    """``tree`` unchanged; under ``vmap`` (with any leaf batched), every leaf batched.

    A ``while_loop`` whose predicate is batched (each run stops on its own)
    carries every value batched. JAX's batching rule finds that out by batching
    the loop body again for each round of newly batched carries; a loop whose
    carry starts all batched needs one round. For the 1-seed CartPole PPO
    program that is one batching of the update fewer (tracing 0.95 -> 0.64 s,
    README "Throughput"). The
    broadcasts are the ones the rule would insert, so the compiled program is
    the same (tests/test_loop.py).
    """
    return tree


@batched_under_vmap.def_vmap
def _broadcast_unbatched(axis_size: int, in_batched: list, tree: Any) -> tuple[Any, Any]:
    broadcast = lambda x, batched: x if batched else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x))
    return jax.tree_util.tree_map(broadcast, tree, in_batched[0]), jax.tree_util.tree_map(lambda _: True, in_batched[0])


def run_segment(algo: Algorithm, state: Any, hparams: dict, stop_at: jax.Array, length: int) -> tuple[Any, Any]:
    """Run updates until ``state.update == stop_at``, the budget is spent, the run fails, or ``length`` updates.

    Args:
      stop_at: i32[] update count at which to pause (e.g. the next checkpoint).
      length: static; the metric buffer's number of rows.

    Returns:
      (state, metrics) with each metrics leaf ``[length]``; rows not run have env_steps 0 and NaN.
    """
    update = jax.jit(algo.update)  # traced once: eval_shape's trace is reused by the loop body
    row_shape = jax.eval_shape(update, state, hparams)[1]
    metrics = empty_metrics(row_shape, length)

    def go_on(carry):
        state, _, i = carry
        return jnp.logical_and(jnp.logical_and(i < length, state.update < stop_at), running(algo, state))

    def body(carry):
        state, metrics, i = carry
        state, row = update(state, hparams)
        metrics = jax.tree_util.tree_map(lambda buf, x: buf.at[i].set(x), metrics, row)
        return state, metrics, i + 1

    carry = batched_under_vmap((state, metrics, jnp.int32(0)))
    state, metrics, _ = jax.lax.while_loop(go_on, body, carry)
    return state, metrics


def make_train(algo: Algorithm) -> Callable[..., TrainOutput]:
    """``train(key, hparams=None) -> TrainOutput``: the whole budget in one compiled loop.

    ``hparams`` overrides traced hyperparameters (name -> f32 scalar), so
    ``jax.jit(jax.vmap(train))(keys, hparams)`` trains one run per key and value.
    """

    def train(key: jax.Array, hparams: dict[str, jax.Array] | None = None) -> TrainOutput:
        hparams = hparams or {}
        state = algo.init(key, hparams)
        state, metrics = run_segment(algo, state, hparams, jnp.int32(algo.max_updates), algo.max_updates)
        return TrainOutput(state, metrics)

    return train
