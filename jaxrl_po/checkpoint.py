"""Checkpoints of a whole batch of runs (orbax): training state, metric history, metadata.

A checkpoint lives in ``RUN_DIR/checkpoints/<updates done>/`` and holds
- ``state``: the vmapped training state of every run (params, optimiser state,
  env state, normaliser statistics, PRNG keys, update counters),
- ``history``: every per-update metric row so far (so a resumed run rewrites
  ``metrics.csv`` exactly and its summary covers the whole run),
- ``meta``: JSON naming the algorithm, the config, the seeds and the sweep grid, and
  recording the sittings that trained it (so a run resumed after a kill has its time).
orbax writes each one into a temporary directory and renames it when complete,
so an interrupted save never replaces a good checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrl_po.distributed import is_prng_key

CHECKPOINT_DIR = "checkpoints"


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a saved step (cheap: no orbax, nothing created)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or from another run; the message says which."""


class Restored(NamedTuple):
    state: Any  # numpy leaves, PRNG keys re-wrapped
    history: Any  # metrics NamedTuple of [num_runs, num_rows]
    step: int


def from_saveable(tree: Any, like: Any) -> Any:
    """Re-wrap the saved uint32 key data where ``like`` (an abstract tree) holds PRNG keys.

    Keys are re-wrapped with JAX's default PRNG implementation, the one ``jax.random.key`` made them with.
    """
    return jax.tree_util.tree_map(lambda x, ref: jax.random.wrap_key_data(x) if is_prng_key(ref) else x, tree, like)


def _numpy_target(abstract: Any) -> Any:
    """Zero numpy arrays shaped like ``abstract`` (ShapeDtypeStructs), so orbax restores to host memory."""
    data = lambda s: jax.eval_shape(jax.random.key_data, s) if is_prng_key(s) else s
    return jax.tree_util.tree_map(lambda s: np.zeros(data(s).shape, data(s).dtype), abstract)


class Checkpointer:
    """Save / list / restore the checkpoints of one run directory."""

    def __init__(self, run_dir: Path, keep: int = 3, create: bool = True):
        import orbax.checkpoint as ocp

        self.directory = (Path(run_dir) / CHECKPOINT_DIR).absolute()
        self._ocp = ocp
        with _orbax_logs_quiet():  # it reads every step's metadata
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, enable_async_checkpointing=False),
            )

    def steps(self) -> list[int]:
        with _orbax_logs_quiet():
            return sorted(self._manager.all_steps()) if self.directory.is_dir() else []

    def save(self, step: int, state: Any, history: Any, meta: dict) -> Path:
        """Write checkpoint ``step`` (updates done); the oldest beyond ``keep`` are deleted.

        ``state``: host arrays, PRNG keys as their uint32 data (what ``distributed.fetch``
        gives; orbax stores plain arrays). A step that is already saved is left as it is
        (same updates done: same state; its record of the sittings may end earlier than
        ``meta``'s, which the summary written with it has: logs.sessions_before_resume).
        """
        ocp = self._ocp
        if step in self.steps():
            return self.directory / str(step)
        history = {name: np.asarray(value) for name, value in history._asdict().items()}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                history=ocp.args.StandardSave(history),
                meta=ocp.args.JsonSave({**meta, "num_rows": int(next(iter(history.values())).shape[1])}),
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        return self.directory / str(step)

    def read_meta(self, step: int) -> dict:
        ocp = self._ocp
        try:
            with _orbax_logs_quiet():
                return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as err:  # orbax raises many types for a damaged directory
            raise self._unreadable(step, err) from None

    def restore(self, step: int, meta: dict, abstract_state: Any, abstract_row: Any, num_runs: int) -> Restored:
        """Checkpoint ``step``, whose :meth:`read_meta` is ``meta`` (the caller has checked it).

        ``abstract_state``: ``jax.eval_shape`` of the batched state; ``abstract_row``:
        of one metrics row (a NamedTuple of scalars; gives the history's columns and dtypes).
        """
        ocp = self._ocp
        try:  # a checkpoint without (or with a bad) num_rows is as damaged as one orbax cannot read
            history_target = {name: np.zeros((num_runs, int(meta["num_rows"])), column.dtype)
                              for name, column in abstract_row._asdict().items()}
            with _orbax_logs_quiet():
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(_numpy_target(abstract_state)),
                        history=ocp.args.StandardRestore(history_target),
                    ),
                )
        except Exception as err:
            raise self._unreadable(step, err) from None
        state = from_saveable(restored.state, abstract_state)
        _check_shapes(state, abstract_state, self.directory / str(step))
        history = type(abstract_row)(**{name: np.asarray(restored.history[name]) for name in abstract_row._fields})
        return Restored(state, history, step)

    def _unreadable(self, step: int, err: Exception) -> CheckpointError:
        """The error for checkpoint ``step`` that orbax could not read; it names the older ones, if any."""
        _ignore_reads_finishing_after_a_failed_restore()
        where = self.directory / str(step)
        older = [s for s in self.steps() if s < step]
        hint = f"; move it away to use checkpoint {older[-1]} instead" if older else ""
        return CheckpointError(f"cannot read checkpoint {where}: {_reason(err)}{hint}")


@contextlib.contextmanager
def _orbax_logs_quiet():
    """No absl log lines from orbax while it reads: for a damaged checkpoint it logged its own ERROR line
    (an empty ``_CHECKPOINT_METADATA``) before the one-line CheckpointError that says what to do."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _ignore_reads_finishing_after_a_failed_restore() -> None:
    """Keep stderr to the one-line error after orbax gave up on a damaged checkpoint.

    orbax closes its asyncio loop when a read fails; the reads of the same
    checkpoint still in flight then finish into that closed loop, and tensorstore
    reports each as an unraisable ``RuntimeError('Event loop is closed')`` (a
    traceback on stderr, even after the error was printed). Only those are dropped.
    Installed once per process: the hook in place is often a stop context's, so it
    cannot tell whether the filter is already in its chain, and an in-process caller
    that restores again would add a link each time.
    """
    global _filtering_closed_loop_errors
    if _filtering_closed_loop_errors:
        return
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        error = unraisable.exc_value
        if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
            previous(unraisable)

    sys.unraisablehook = hook
    _filtering_closed_loop_errors = True


_filtering_closed_loop_errors = False


def _check_shapes(state: Any, abstract: Any, where: Path) -> None:
    for (path, x), ref in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree_util.tree_leaves(abstract)):
        if x.shape != ref.shape:
            name = jax.tree_util.keystr(path)
            raise CheckpointError(f"checkpoint {where} does not fit this config: {name} has shape {x.shape}, expected {ref.shape}")


def _reason(err: Exception) -> str:
    """The error's type and first line, at most 300 characters (tensorstore's run long)."""
    text = str(err).strip().splitlines()
    reason = f"{type(err).__name__}: {text[0] if text else ''}"
    return reason if len(reason) <= 300 else reason[:297] + "..."
