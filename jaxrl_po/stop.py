"""Stop signals (Ctrl-C, SIGTERM): outside training they stop at once; during it they save a checkpoint first.

Kept apart from the runner (no jax import) so that ``train`` can stop cleanly from its first line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable, NoReturn

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
"""Signals that stop a run, saving a checkpoint once training has started: Ctrl-C, and the
SIGTERM that schedulers (SLURM, Kubernetes, ``timeout``) send before they kill. Exit code 128 + signal."""


STDOUT_CLOSED = 128 + signal.SIGPIPE
"""Exit code of a run stopped because stdout's reader went away (``logs.StdoutGuard``): SIGPIPE's code."""


class StdoutClosed(Exception):
    """stdout's reader went away before training (``... | head -1``): the CLI stops as at a stop signal then,
    saving nothing. Once training has begun the runner saves a checkpoint first, as at SIGTERM."""


class StopRequested(KeyboardInterrupt):
    """A stop signal outside training, or a second one during it: leave at once (exit code ``128 + signum``)."""

    def __init__(self, signum: int = signal.SIGINT, came_out_as: BaseException | None = None):
        super().__init__(STOP_SIGNALS[signum])
        self.signum = signum
        self.came_out_as = came_out_as  # the error a swallowed stop came out as (stop_instead_of)


CLI_MODULES = ("jaxrl_po.train", "jaxrl_po.evaluate", "jaxrl_po.plot")
"""The modules run as ``python -m MODULE``; while Python loads one, a stop signal exits at once."""


def _on_main_thread() -> bool:
    """Only the main thread can set signal handlers, and Python runs them there: elsewhere the contexts do nothing."""
    return threading.current_thread() is threading.main_thread()


def _install(handler) -> dict:
    """Make ``handler`` the handler of every stop signal the process does not ignore; returns the handlers
    it replaced. An ignored one stays ignored, as Python leaves it: a shell starts a script's background
    job (``cmd &``) with SIGINT ignored, and ``trap '' INT`` asks for it, so that Ctrl-C does not stop it."""
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS
            if signal.getsignal(signum) is not signal.SIG_IGN}


def _put_back(previous: dict) -> None:
    """Reinstate the handlers :func:`_install` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


_replaced_while_loading: dict | None = None  # the handlers stop_at_once_while_a_cli_loads replaced


def loading_a_cli() -> bool:
    """Whether this process is ``python -m`` one of :data:`CLI_MODULES` and Python is still finding it.

    Until it has, ``sys.argv`` is ["-m", *the module's arguments] (Python's documented behaviour), and
    ``sys.orig_argv`` ends with the module's name (``jaxrl_po.train``, or joined to the options:
    ``-mjaxrl_po.train``, ``-um jaxrl_po.train``) and then those arguments.
    """
    if sys.argv[:1] != ["-m"] or len(sys.orig_argv) < len(sys.argv) + 1:
        return False
    name = sys.orig_argv[len(sys.orig_argv) - len(sys.argv)]
    if name.startswith("-"):  # -mNAME, -umNAME
        name = name[name.find("m") + 1:]
    return name in CLI_MODULES


def stop_at_once_while_a_cli_loads() -> None:
    """From the package's first line, for a CLI (:func:`loading_a_cli`): a stop signal before the CLI's first
    :class:`StopAtOnce` exits at once with one line, ``interrupted (Ctrl-C)``, and code 128 + signal.

    Nothing is written yet. Python's own KeyboardInterrupt, raised inside the imports (about a second
    of them), came out as a traceback, as an ImportError of an extension module (jaxlib) half loaded,
    or was dropped in an import-lock callback, and the run then trained to the end.
    """
    global _replaced_while_loading
    if loading_a_cli() and _on_main_thread() and _replaced_while_loading is None:
        _replaced_while_loading = _install(_exit_at_once)


def _exit_at_once(signum, frame) -> NoReturn:
    line, code = _stop_line(StopRequested(signum))
    try:
        os.write(sys.stderr.fileno(), f"{line}\n".encode())  # print could re-enter a write the signal cut
    finally:
        os._exit(code)


def _handlers_before_loading(installed: dict) -> dict:
    """What :class:`StopAtOnce` puts back when it ends: ``installed`` (the handlers it replaced), or, when they
    were :func:`stop_at_once_while_a_cli_loads`'s, those that one replaced. StopAtOnce's own are in first,
    so no stop comes between the two (a SIGTERM there once killed the CLI without a line)."""
    global _replaced_while_loading
    if _replaced_while_loading is None:
        return installed
    before, _replaced_while_loading = _replaced_while_loading, None
    return before


def stop_exit_code(err: KeyboardInterrupt) -> tuple[str, int]:
    """(what stopped the run, exit code): a plain KeyboardInterrupt is Ctrl-C."""
    signum = getattr(err, "signum", signal.SIGINT)
    return STOP_SIGNALS[signum], 128 + signum


def _stop_line(err: KeyboardInterrupt) -> tuple[str, int]:
    """(``\ninterrupted (Ctrl-C)``, the exit code 128 + signal)."""
    name, code = stop_exit_code(err)
    return f"\ninterrupted ({name})", code


def print_stop(err: KeyboardInterrupt) -> int:
    """A CLI's stop outside training: ``interrupted (Ctrl-C)`` on stderr; returns the exit code (128 + signal)."""
    line, code = _stop_line(err)
    print(line, file=sys.stderr)
    return code


def exit_process(code: int) -> NoReturn:
    """``sys.exit(code)`` for a CLI's ``__main__``; after a stop (128 + signal) ``os._exit``, without the interpreter's teardown.

    XLA may still be at work on its own threads (a second stop while it compiled), and tearing the
    interpreter down under them crashed it (SIGABRT, SIGSEGV). Everything is written by then.
    """
    if code in {128 + signum for signum in STOP_SIGNALS}:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def stop_instead_of(signum: int | None, exc_type: type | None, exc: BaseException | None) -> None:
    """Raise :class:`StopRequested` when a stop signal came (``signum``) and what ends the context is not that stop.

    A stop that nothing raised (Python dropped it) is raised now. Code with a bare ``except:`` (jax.make_mesh
    has one) can swallow the stop and fail with an error of its own: the stop is what happened, and that error
    stays attached as ``came_out_as`` (``train`` names it on the stop's line) and as the traceback's cause.
    """
    if signum is None or (exc_type is not None and issubclass(exc_type, KeyboardInterrupt)):
        return
    raise StopRequested(signum, came_out_as=exc) from exc


_open: list[StopAtOnce] = []  # StopAtOnce contexts open now, outermost first
_xla_at_work = 0  # depth of waiting_for_xla() blocks running now


def raise_pending_stop() -> None:
    """Before a new phase starts: raise a stop that an open :class:`StopAtOnce` holds but nothing raised."""
    for context in _open:
        if context.signum is not None:
            raise StopRequested(context.signum)


@contextlib.contextmanager
def waiting_for_xla():
    """Around an XLA compile or run: a first stop signal waits until it returns, then stops; a second stops at once.

    jaxlib checks for signals while it waits for XLA and, at one, returns at once, leaving XLA at work on its
    own threads (measured: a compile stopped after 1 s kept them busy for another 0.9 CPU-s). A CLI stopped
    that way now and then crashed while it tidied up and exited (SIGSEGV after its one line, once in CI).
    """
    global _xla_at_work
    if not _on_main_thread():
        yield
        return
    _xla_at_work += 1
    try:
        yield
    finally:
        _xla_at_work -= 1
    raise_pending_stop()


class StopAfterSegment:
    """During training: a stop signal sets a flag that the host loop checks after each segment (it then
    saves a checkpoint and stops); a second one aborts at once."""

    def __init__(self, console):
        self.signum = None  # the first stop signal received
        self.aborted = None  # the second one
        self.console = console
        self.previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if _on_main_thread():
            raise_pending_stop()  # a stop lost before training: do not start it
            self.previous = _install(self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            self.aborted = signum
            raise StopRequested(signum)
        self.signum = signum
        name = STOP_SIGNALS[signum]
        self.console.print(f"\n[yellow]{name}: saving a checkpoint after this segment ({name} again to abort)[/]")

    def __exit__(self, exc_type, exc, tb):
        _put_back(self.previous)
        if exc_type is not None:  # an abort swallowed with nothing raised let the run finish: keep that
            stop_instead_of(self.aborted, exc_type, exc)


def _note(text: str) -> None:
    """Write ``text`` to stdout from a signal handler, if it can: os.write cannot re-enter a write the signal
    interrupted (print can). A stdout without a file descriptor (a notebook's, pytest's capsys) gets nothing."""
    try:
        os.write(sys.stdout.fileno(), text.encode())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError and a ValueError
        pass


class StopAtOnce:
    """Outside training (before and after it): a stop signal raises :class:`StopRequested` at once (inside
    :func:`waiting_for_xla`, once XLA returns), and is not lost where Python drops it or a library swallows it.

    A KeyboardInterrupt raised while a gc callback runs (jax registers one) is only passed to
    ``sys.unraisablehook``, which printed a traceback, and the run went on as if no Ctrl-C had come.
    Here that hook drops it; the next phase (:func:`raise_pending_stop`) or leaving this context raises
    it again: one line, exit code 128 + signal. Contexts nest (``train.main`` around ``runner.train_job``).
    """

    def __enter__(self):
        self.signum, self.active, self.installed = None, False, _on_main_thread()
        if not self.installed:
            return self
        raise_pending_stop()  # while the handlers go in, a stop is recorded, not raised (active)
        self.previous_hook = sys.unraisablehook
        sys.unraisablehook = self._drop_lost_stop
        self.previous = _handlers_before_loading(_install(self._handle))
        _open.append(self)
        self.active = True
        if self.signum is not None:  # one came meanwhile
            self.__exit__(None, None, None)
        return self

    def _handle(self, signum, frame):
        first, self.signum = self.signum is None, signum
        if not self.active:
            return
        if first and _xla_at_work:
            name = STOP_SIGNALS[signum]
            _note(f"\n{name}: stopping once XLA is done ({name} again to stop at once)\n")
            return
        raise StopRequested(signum)

    def _drop_lost_stop(self, unraisable) -> None:
        """Drop only a stop this context raised (it raises it again); others reach the previous hook."""
        if not (self in _open and self.signum is not None and isinstance(unraisable.exc_value, StopRequested)):
            self.previous_hook(unraisable)

    def __exit__(self, exc_type, exc, tb):
        if not self.installed:
            return
        self.active = False  # while the handlers are put back, a stop is recorded, not raised
        _put_back(self.previous)
        _open.remove(self)
        if sys.unraisablehook == self._drop_lost_stop:  # else a hook set since chains to this one: keep it
            sys.unraisablehook = self.previous_hook
        stop_instead_of(self.signum, exc_type, exc)


def run_stoppable(work: Callable[[], int | None]) -> int:
    """A CLI's ``work()`` (its exit code; None is 0) inside :class:`StopAtOnce`: Ctrl-C or SIGTERM gives one line,
    ``interrupted (Ctrl-C)``, and returns 128 + signal. A first stop while XLA compiles or runs waits for it
    (:func:`waiting_for_xla`). Other errors pass through, for the CLI to print its own way."""
    try:
        with StopAtOnce():
            return work() or 0
    except KeyboardInterrupt as err:
        return print_stop(err)
