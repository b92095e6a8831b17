"""Stop signals (jaxrl_po.stop): a Ctrl-C or SIGTERM is never lost, and never turns into a traceback.

Each test runs the installed handler itself, as the signal would run it, at the moment that
matters: inside a gc callback (where Python drops what it raises), inside library code with a
bare ``except:``, or while the handlers are being put back. The end-to-end signals are in
tests/test_checkpoint.py.
"""

from __future__ import annotations

import gc
import signal
import sys

import pytest

from jaxrl_po import stop
from jaxrl_po.stop import Interrupt, StopBeforeTraining, StopRequested


def run_handler(signum: int = signal.SIGTERM) -> None:
    """The installed handler of ``signum``, run as the signal would run it."""
    signal.getsignal(signum)(signum, None)


def sigterm_swallowed_by_library_code(*args, **kwargs):
    """A SIGTERM that lands in library code with a bare ``except:`` which fails with its own error.

    jax.make_mesh's check of the axis sizes does this: CI once saw a SIGTERM sent while
    compiling come out as its ValueError and a traceback, exit code 1.
    """
    try:
        run_handler(signal.SIGTERM)
    except:  # noqa: E722
        raise ValueError("`axis_shapes` passed to `make_mesh` should be a sequence of ints")


def lose_in_gc(action) -> None:
    """Run ``action`` inside a gc callback, where Python passes what it raises to sys.unraisablehook."""
    def callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(callback)
            action()

    gc.callbacks.append(callback)
    gc.collect()


@pytest.fixture
def unraisable():
    """What reaches sys.unraisablehook (Python's "Exception ignored" traceback) during the test."""
    caught, hook = [], sys.unraisablehook
    sys.unraisablehook = caught.append
    handlers = {signum: signal.getsignal(signum) for signum in stop.STOP_SIGNALS}
    yield caught
    assert sys.unraisablehook == caught.append  # every context put it back
    assert {signum: signal.getsignal(signum) for signum in stop.STOP_SIGNALS} == handlers
    assert stop._open == []
    sys.unraisablehook = hook


def test_a_ctrl_c_that_python_drops_in_a_gc_callback_still_stops_a_run_before_training(unraisable):
    """SIGINT handled while jax's gc callback ran was printed as "Exception ignored ... KeyboardInterrupt"
    and the run trained to the end (exit 0). Now the interrupt is raised on leaving the context, with
    nothing printed for it."""
    with pytest.raises(StopRequested) as stopped:
        with StopBeforeTraining():
            lose_in_gc(lambda: run_handler(signal.SIGINT))
    assert stopped.value.signum == signal.SIGINT
    assert unraisable == []  # no "Exception ignored" traceback beside the one-line message


def test_an_interrupt_the_context_did_not_raise_is_not_hidden(unraisable):
    """E.g. the runner's second Ctrl-C while train.main's context is open: it will not be raised again."""
    def raise_interrupt():
        raise KeyboardInterrupt

    with StopBeforeTraining():
        lose_in_gc(raise_interrupt)
    assert [type(u.exc_value) for u in unraisable] == [KeyboardInterrupt]
    unraisable.clear()


def test_a_hook_set_inside_the_context_stays(unraisable):
    """checkpoint's filter after a failed restore chains to this context's hook; leaving keeps it."""
    def chained(u):
        pass

    with StopBeforeTraining():
        sys.unraisablehook = chained
    assert sys.unraisablehook is chained
    sys.unraisablehook = unraisable.append


def test_a_stop_lost_while_setting_up_stops_before_the_next_phase(unraisable):
    """train.main's context covers parsing and setting up; a stop lost there (in a gc callback) must not
    wait for the whole run: the compile phase (a nested context) and training (Interrupt) refuse to start."""
    for next_phase in (StopBeforeTraining, lambda: Interrupt(console=None)):
        entered = []
        with pytest.raises(StopRequested) as stopped:
            with StopBeforeTraining():
                lose_in_gc(run_handler)
                with next_phase():
                    entered.append(True)
        assert stopped.value.signum == signal.SIGTERM and entered == []
    assert unraisable == []


def test_a_stop_that_library_code_swallows_is_still_the_stop(unraisable):
    with pytest.raises(StopRequested) as stopped:
        with StopBeforeTraining():
            sigterm_swallowed_by_library_code()
    assert stopped.value.signum == signal.SIGTERM
    assert isinstance(stopped.value.came_out_as, ValueError)  # kept, for the stop's line to name
    with pytest.raises(ValueError):  # with no stop signal, an error stays itself
        with StopBeforeTraining():
            raise ValueError("a real error")


def test_a_second_stop_swallowed_during_training_is_still_the_stop(unraisable):
    """During training the first stop only asks for a checkpoint; the second aborts, also through a bare except."""
    class Console:
        def print(self, text):
            pass

    with pytest.raises(StopRequested) as stopped:
        with Interrupt(Console()) as interrupt:
            run_handler()
            assert interrupt.requested
            sigterm_swallowed_by_library_code()
    assert isinstance(stopped.value.came_out_as, ValueError)
    with Interrupt(Console()):  # swallowed with nothing raised: the run went on to its end, which stands
        run_handler()
        try:
            run_handler()
        except:  # noqa: E722
            pass


def test_a_stop_while_the_handlers_are_put_back_is_raised_after_they_are(monkeypatch, unraisable):
    """A signal between two of the restoring ``signal.signal`` calls ran this context's handler, which raised
    out of ``__exit__`` and left the other handler and the hook installed."""
    real_signal = signal.signal

    def signal_arrives_first(signum, handler):
        monkeypatch.setattr(signal, "signal", real_signal)
        run_handler(signum)  # the context's own handler: it is still installed
        return real_signal(signum, handler)

    with pytest.raises(StopRequested):
        with StopBeforeTraining():
            monkeypatch.setattr(signal, "signal", signal_arrives_first)
    # the fixture checks that every handler and the hook were put back


def test_cli_stopped_inside_library_code_exits_with_one_line(monkeypatch, capsys, unraisable):
    """The stop's line names the error it came out as, and only that: jax chains a marker of its own as the
    ``__cause__`` of a stop raised while it lowers an operation (a Ctrl-C 2.5 s into compiling showed
    "then JaxStackTraceBeforeTransformation: ..." on jax 0.11.2)."""
    from jaxrl_po import train

    monkeypatch.setattr(train, "parse", sigterm_swallowed_by_library_code)
    assert train.main(["--algo", "ppo"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == (
        "interrupted (SIGTERM) (then ValueError: `axis_shapes` passed to `make_mesh` should be a sequence of ints)")

    def parse_stopped_while_lowering(argv):
        try:
            run_handler()
        except StopRequested as stopped:  # as jax's source_info_util.user_context chains its marker
            stopped.__cause__ = RuntimeError("The preceding stack trace is the source of the JAX operation ...")
            raise

    monkeypatch.setattr(train, "parse", parse_stopped_while_lowering)
    assert train.main(["--algo", "ppo"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "interrupted (SIGTERM)"
