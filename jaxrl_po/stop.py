"""Stop signals (Ctrl-C, SIGTERM): before training they stop at once; during training they save a checkpoint first.

Kept apart from the runner (no jax import) so that ``train`` can stop cleanly from its first line.
"""

from __future__ import annotations

import signal
import sys

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
"""Signals that stop a run, saving a checkpoint once training has started: Ctrl-C, and the
SIGTERM that schedulers (SLURM, Kubernetes, ``timeout``) send before they kill. Exit code 128 + signal."""


class StopRequested(KeyboardInterrupt):
    """A stop signal before training started: leave at once (exit code ``128 + signum``)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(STOP_SIGNALS[signum])
        self.signum = signum


def stop_exit_code(err: KeyboardInterrupt) -> tuple[str, int]:
    """(what stopped the run, exit code): a plain KeyboardInterrupt is Ctrl-C."""
    signum = getattr(err, "signum", signal.SIGINT)
    return STOP_SIGNALS[signum], 128 + signum


class Interrupt:
    """A stop signal sets a flag that the host loop checks after each segment; a second one aborts at once."""

    def __init__(self, console):
        self.signum = None  # the first stop signal received
        self.console = console
        self.previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        self.previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise StopRequested(signum)
        self.signum = signum
        name = STOP_SIGNALS[signum]
        self.console.print(f"\n[yellow]{name}: saving a checkpoint after this segment ({name} again to abort)[/]")

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)


class StopBeforeTraining:
    """Before training: a stop signal raises :class:`StopRequested` at once, and is not lost where Python drops it.

    A KeyboardInterrupt raised while a gc callback runs (jax registers one) is only passed to
    ``sys.unraisablehook``, which printed a traceback, and the run went on as if no Ctrl-C had come.
    Here that hook drops it, and leaving this context raises it again: one line, exit code 128 + signal.
    """

    def __enter__(self):
        self.signum, self.active = None, True
        self.previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        self.previous_hook = sys.unraisablehook
        sys.unraisablehook = self._drop_lost_stop
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        raise StopRequested(signum)

    def _drop_lost_stop(self, unraisable) -> None:
        """Drop only a stop this context raised (it raises it again on leaving); others reach the previous hook."""
        if not (self.active and self.signum is not None and isinstance(unraisable.exc_value, StopRequested)):
            self.previous_hook(unraisable)

    def __exit__(self, exc_type, *exc):
        self.active = False
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        if sys.unraisablehook == self._drop_lost_stop:  # else a hook set since chains to this one: keep it
            sys.unraisablehook = self.previous_hook
        if self.signum is None:
            return
        if exc_type is None:
            raise StopRequested(self.signum)
        if not issubclass(exc_type, KeyboardInterrupt):
            # Code with a bare ``except:`` (jax.make_mesh has one) can swallow the stop and fail
            # with an error of its own: the stop is what happened, so report the stop.
            raise StopRequested(self.signum) from exc[0]
