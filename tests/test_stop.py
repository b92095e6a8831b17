"""Stop signals (jaxrl_po.stop): a Ctrl-C or SIGTERM is never lost, and never turns into a traceback.

Each test runs the installed handler itself, as the signal would run it, at the moment that
matters: inside a gc callback (where Python drops what it raises), inside library code with a
bare ``except:``, or while the handlers are being put back. The end-to-end signals are in
tests/test_checkpoint.py.
"""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import sys
import threading
import time
from typing import Callable

import pytest

from conftest import run_handler
from jaxrl_po import stop
from jaxrl_po.stop import StopAfterSegment, StopAtOnce, StopRequested, waiting_for_xla


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
        with StopAtOnce():
            lose_in_gc(lambda: run_handler(signal.SIGINT))
    assert stopped.value.signum == signal.SIGINT
    assert unraisable == []  # no "Exception ignored" traceback beside the one-line message


def test_an_interrupt_the_context_did_not_raise_is_not_hidden(unraisable):
    """E.g. the runner's second Ctrl-C while train.main's context is open: it will not be raised again."""
    def raise_interrupt():
        raise KeyboardInterrupt

    with StopAtOnce():
        lose_in_gc(raise_interrupt)
    assert [type(u.exc_value) for u in unraisable] == [KeyboardInterrupt]
    unraisable.clear()


def test_a_hook_set_inside_the_context_stays(unraisable):
    """checkpoint's filter after a failed restore chains to this context's hook; leaving keeps it."""
    def chained(u):
        pass

    with StopAtOnce():
        sys.unraisablehook = chained
    assert sys.unraisablehook is chained
    sys.unraisablehook = unraisable.append


def test_restoring_in_process_again_adds_no_second_closed_loop_filter(monkeypatch):
    """An in-process caller that trains (and restores) again keeps the one filter: checkpoint installs it
    inside a stop context, whose hook hides it, so the chain used to grow by a link per call."""
    from types import SimpleNamespace

    from jaxrl_po import checkpoint

    caught = []
    monkeypatch.setattr(sys, "unraisablehook", caught.append)
    monkeypatch.setattr(checkpoint, "_filtering_closed_loop_errors", False, raising=False)
    hooks = []
    for _ in range(3):
        with StopAtOnce():
            checkpoint._ignore_reads_finishing_after_a_failed_restore()
        hooks.append(sys.unraisablehook)
    assert hooks[0] is not caught.append
    assert hooks[1] is hooks[0] and hooks[2] is hooks[0]
    closed, other = RuntimeError("Event loop is closed"), RuntimeError("something else")
    for error in (closed, other):
        hooks[0](SimpleNamespace(exc_value=error))
    assert [u.exc_value for u in caught] == [other]  # the filter drops only the closed loop's errors


def test_a_stop_lost_while_setting_up_stops_before_the_next_phase(unraisable):
    """train.main's context covers parsing and setting up; a stop lost there (in a gc callback) must not
    wait for the whole run: the compile phase (a nested context) and training (StopAfterSegment) refuse to start."""
    for next_phase in (StopAtOnce, lambda: StopAfterSegment(console=None)):
        entered = []
        with pytest.raises(StopRequested) as stopped:
            with StopAtOnce():
                lose_in_gc(run_handler)
                with next_phase():
                    entered.append(True)
        assert stopped.value.signum == signal.SIGTERM and entered == []
    assert unraisable == []


def test_a_first_stop_while_xla_is_at_work_waits_for_it_and_a_second_does_not(unraisable, capfd):
    """jaxlib returns at a signal while XLA still works on its own threads; the first stop waits for XLA."""
    for signals, reached in ((1, ["xla done"]), (2, [])):
        done = []
        with pytest.raises(StopRequested) as stopped:
            with StopAtOnce():
                with waiting_for_xla():
                    for _ in range(signals):
                        run_handler(signal.SIGINT)
                    done.append("xla done")
                done.append("next phase")
        assert stopped.value.signum == signal.SIGINT and done == reached
    assert capfd.readouterr().out.count("Ctrl-C: stopping once XLA is done (Ctrl-C again to stop at once)") == 2
    assert stop._xla_at_work == 0


def test_the_note_of_a_waiting_stop_needs_no_file_descriptor(monkeypatch, unraisable):
    """A notebook's stdout has none (nor has pytest's capsys): the stop still waits, then comes, without the note."""
    import io

    monkeypatch.setattr(sys, "stdout", io.StringIO())  # fileno() raises io.UnsupportedOperation
    reached = []
    with pytest.raises(StopRequested) as stopped:
        with StopAtOnce():
            with waiting_for_xla():
                run_handler(signal.SIGINT)
                reached.append("xla done")
    assert reached == ["xla done"] and stopped.value.came_out_as is None


def test_a_sigterm_while_the_runner_compiles_stops_once_the_compile_returns(monkeypatch, capfd, unraisable):
    """A real SIGTERM 0.05 s into compiling the update: XLA finishes that program, then the run stops.

    Without the wait, jaxlib raised the stop at once and left XLA compiling on its own threads;
    a CLI stopped that way once crashed (SIGSEGV) after printing its line, in CI.
    """
    import jax

    from jaxrl_po import PPOConfig, make_algorithm
    from jaxrl_po.runner import compile_job
    from jaxrl_po.sweep import make_runs

    real_compile = jax.stages.Lowered.compile
    compiled, signalled = [], []

    def compile_hit_by_a_sigterm(self, *args, **kwargs):
        if not compiled:  # init's program; the update's is the longer one
            executable = real_compile(self, *args, **kwargs)
            compiled.append(time.perf_counter())
            return executable
        timer = threading.Timer(0.05, lambda: (signalled.append(time.perf_counter()), os.kill(os.getpid(), signal.SIGTERM)))
        timer.start()
        try:
            executable = real_compile(self, *args, **kwargs)
            compiled.append(time.perf_counter())
        finally:
            timer.join()  # the signal always lands inside the runner's context
        return executable

    monkeypatch.setattr(jax.stages.Lowered, "compile", compile_hit_by_a_sigterm)
    config = PPOConfig(num_envs=16, num_steps=16, total_timesteps=8192)
    runs = make_runs(config, [0])
    with pytest.raises(StopRequested) as stopped:
        with StopAtOnce():
            compile_job(make_algorithm(config), runs.keys, runs.hparams)
    assert stopped.value.signum == signal.SIGTERM
    assert len(compiled) == 2 and signalled[0] < compiled[1]  # it came while XLA compiled, which then finished
    assert "SIGTERM: stopping once XLA is done" in capfd.readouterr().out


def stop_inside(monkeypatch, owner, name: str, when: Callable[..., bool] = lambda *args: True) -> list[str]:
    """Give the first call of ``owner.name`` whose arguments satisfy ``when`` a SIGTERM as it starts, where XLA
    is already at work; returns ``[name]`` once that call has returned, which it does only where its caller
    waits for XLA (elsewhere the handler raises the stop in it at once)."""
    real, returned = getattr(owner, name), []

    def hit(*args, **kwargs):
        if returned or not when(*args):
            return real(*args, **kwargs)
        returned.append(None)  # one hit only, also when the stop is raised here
        run_handler(signal.SIGTERM)
        out = real(*args, **kwargs)
        returned[-1] = name
        return out

    monkeypatch.setattr(owner, name, hit)
    return returned


def _tiny_job(tmp_path, **options):
    import json

    from jaxrl_po import PPOConfig, runner
    from jaxrl_po.config import to_dict
    from jaxrl_po.sweep import make_runs

    config = PPOConfig(num_envs=8, num_steps=8, num_minibatches=2, total_timesteps=640)
    meta = json.loads(json.dumps({"algo": "ppo", "seeds": [0], "sweep": {}, **to_dict(config)}))
    return runner.JobSpec(algo_name="ppo", config=config, runs=make_runs(config, [0]), run_dir=tmp_path, meta=meta,
                          **options)


def test_a_stop_while_the_runner_starts_or_restores_the_runs_waits_for_xla(tmp_path, monkeypatch, capfd, unraisable):
    """Every wait for XLA before training: the two compiles, the runs' first program (init) and the placement
    of a restored checkpoint on the devices; the stop leaves the checkpoint as it was, and the run resumes."""
    import jax
    from rich.console import Console

    from jaxrl_po import runner

    job = _tiny_job(tmp_path, progress=False)
    quiet = Console(quiet=True)

    for nth in (0, 1):  # 0. the compiles of init and of the update segment
        with monkeypatch.context() as patch:
            calls = iter(range(2))
            returned = stop_inside(patch, jax.stages.Lowered, "compile", when=lambda *args: next(calls) == nth)
            with pytest.raises(StopRequested):
                runner.train_job(job, quiet)
        assert returned == ["compile"]

    with monkeypatch.context() as patch:  # 1. init's first run (the job's first block_until_ready)
        returned = stop_inside(patch, jax, "block_until_ready")
        with pytest.raises(StopRequested):
            runner.train_job(job, quiet)
    assert returned == ["block_until_ready"]

    class StoppedInItsFirstSegment:  # 2. a run stopped during training: a checkpoint at update 1
        def __init__(self, segment):
            self.segment, self.out_info = segment, segment.out_info

        def __call__(self, *args):
            run_handler(signal.SIGTERM)
            return self.segment(*args)

    real_compile_job = runner.compile_job
    with monkeypatch.context() as patch:
        patch.setattr(runner, "compile_job", lambda *a, **k: (lambda i, s, c: (i, StoppedInItsFirstSegment(s), c))(
            *real_compile_job(*a, **k)))
        summary, code = runner.train_job(job, quiet)
    assert code == 128 + signal.SIGTERM and summary["interrupted"]
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())

    with monkeypatch.context() as patch:  # 3. its resume, placing the restored state (not the keys and hparams)
        returned = stop_inside(patch, runner, "put_runs", when=lambda tree, *rest: type(tree) is not tuple)
        with pytest.raises(StopRequested):
            runner.train_job(job, quiet, resume=True)
    assert returned == ["put_runs"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == checkpoints
    assert capfd.readouterr().out.count("SIGTERM: stopping once XLA is done") == 4
    summary, code = runner.train_job(job, quiet, resume=True)
    assert code == 0 and summary["total_timesteps"] == 640


def test_a_stop_before_the_first_segment_saves_update_0_and_resumes(tmp_path, unraisable):
    """A SIGTERM while the sinks start (W&B can take seconds) stopped the loop before any segment, and the
    empty history of a fresh run was an IndexError instead of a checkpoint."""
    from rich.console import Console

    from jaxrl_po import runner

    def make_sinks(resumed_env_steps):
        run_handler(signal.SIGTERM)
        return []

    job = _tiny_job(tmp_path, progress=False, make_sinks=make_sinks)
    summary, code = runner.train_job(job, Console(quiet=True))
    assert code == 128 + signal.SIGTERM and summary["interrupted"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["0"]
    summary, code = runner.train_job(_tiny_job(tmp_path, progress=False), Console(quiet=True), resume=True)
    assert code == 0 and summary["total_timesteps"] == 640 and not summary["interrupted"]


def test_a_closed_stdout_during_training_saves_a_checkpoint_like_sigterm(tmp_path, capsys, unraisable):
    """stdout's reader went away (``... | head -3``): the progress line's write was a BrokenPipeError traceback
    and the run lost everything since its last checkpoint. Now it stops after the segment with a checkpoint."""
    from rich.console import Console

    from jaxrl_po import runner
    from jaxrl_po.logs import StdoutGuard
    from jaxrl_po.stop import STDOUT_CLOSED

    class ReaderLeavesAfterTwoLines(io.StringIO):
        def write(self, text):
            if self.getvalue().count("\n") >= 2:
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    stream = ReaderLeavesAfterTwoLines()
    console = Console(file=StdoutGuard(stream), soft_wrap=True)
    summary, code = runner.train_job(_tiny_job(tmp_path, progress=True), console)
    assert code == STDOUT_CLOSED == 141 and summary["interrupted"] and console.file.reader_gone
    assert stream.getvalue().startswith("compiling...\n") and stream.getvalue().count("\n") == 2
    step = int(summary["checkpoint"].rsplit("/", 1)[1])
    assert 1 <= step < 10 and [p.name for p in (tmp_path / "checkpoints").iterdir()] == [str(step)]
    assert capsys.readouterr().err == (f"stdout closed: interrupted at update {step}; checkpoint "
                                       f"{summary['checkpoint']}\ncontinue with: python -m jaxrl_po.train --resume "
                                       f"{tmp_path}\n")
    summary, code = runner.train_job(_tiny_job(tmp_path, progress=False), Console(quiet=True), resume=True)
    assert code == 0 and summary["total_timesteps"] == 640


def test_a_stop_while_a_benchmark_compiles_or_runs_waits_for_xla(monkeypatch, capfd, unraisable):
    """``timing.compile_then_run``, how the benchmarks time a program, waits for XLA's compile and run."""
    import jax
    import jax.numpy as jnp

    from jaxrl_po.timing import compile_then_run

    for owner, name in ((jax.stages.Lowered, "compile"), (jax, "block_until_ready")):
        with monkeypatch.context() as patch:
            returned = stop_inside(patch, owner, name)
            with pytest.raises(StopRequested):
                with StopAtOnce():
                    compile_then_run(lambda x: x + 1, jnp.ones(3))
        assert returned == [name]
    assert capfd.readouterr().out.count("SIGTERM: stopping once XLA is done") == 2


def test_off_the_main_thread_the_contexts_change_nothing(unraisable):
    """Only the main thread can set signal handlers: a CLI's main() called from another thread (a GUI, an
    executor) works as before, and leaves the process's handlers and unraisable hook alone."""
    from jaxrl_po import plot

    seen = []

    def work():
        with StopAtOnce():
            with waiting_for_xla():
                seen.append(stop._xla_at_work)
            with StopAfterSegment(console=None):
                seen.append(sys.unraisablehook)
        seen.append(plot.main(["/nonexistent/run"]))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [0, unraisable.append, 2]  # the fixture checks that handlers and hook are as they were


def test_a_stop_that_library_code_swallows_is_still_the_stop(unraisable):
    with pytest.raises(StopRequested) as stopped:
        with StopAtOnce():
            sigterm_swallowed_by_library_code()
    assert stopped.value.signum == signal.SIGTERM
    assert isinstance(stopped.value.came_out_as, ValueError)  # kept, for the stop's line to name
    with pytest.raises(ValueError):  # with no stop signal, an error stays itself
        with StopAtOnce():
            raise ValueError("a real error")


def test_a_second_stop_swallowed_during_training_is_still_the_stop(unraisable):
    """During training the first stop only asks for a checkpoint; the second aborts, also through a bare except."""
    class Console:
        def print(self, text):
            pass

    with pytest.raises(StopRequested) as stopped:
        with StopAfterSegment(Console()) as interrupt:
            run_handler()
            assert interrupt.requested
            sigterm_swallowed_by_library_code()
    assert isinstance(stopped.value.came_out_as, ValueError)
    with StopAfterSegment(Console()):  # swallowed with nothing raised: the run went on to its end, which stands
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
        with StopAtOnce():
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


@pytest.mark.parametrize("module, signum", [("jaxrl_po.train", signal.SIGINT), ("jaxrl_po.evaluate", signal.SIGTERM)])
def test_a_stop_while_python_loads_a_cli_exits_at_once_with_one_line(tmp_path, module, signum):
    """Python's own KeyboardInterrupt inside the imports came out as a traceback, as an ImportError of a half
    loaded jaxlib, or was dropped in an import-lock callback and the run trained to the end (each seen).
    ``-X importtime`` reports each import as it ends: the signal goes in once jax's own have begun."""
    import subprocess

    from conftest import cli_env

    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", module, "--run-dir", str(tmp_path / "run")],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "jax._src" in line:
            break
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "Error" not in err, err[-3000:]
    assert err.endswith(f"\ninterrupted ({stop.STOP_SIGNALS[signum]})\n") and out == ""
    assert not (tmp_path / "run").exists()


def test_an_ignored_stop_signal_stays_ignored(monkeypatch, unraisable):
    """``trap '' INT``, or a shell's background job: the contexts took SIGINT over and stopped on it."""
    monkeypatch.setattr(sys, "argv", ["-m"])
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "jaxrl_po.train"])
    monkeypatch.setattr(stop, "_replaced_while_loading", None)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop.stop_at_once_while_a_cli_loads()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == stop._exit_at_once  # not ignored: taken over
        with StopAtOnce():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            with StopAfterSegment(console=None):
                assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_cli_started_with_sigint_ignored_trains_through_ctrl_c(tmp_path):
    """Ctrl-C reaches every process of a script's foreground group, and the shell starts the script's
    ``cmd &`` jobs with SIGINT ignored so that it does not stop them; ``trap '' INT`` asks the same."""
    import subprocess

    from conftest import cli_env

    run_dir = tmp_path / "run"
    argv = ["--num-envs", "8", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
            "--hidden-sizes", "16", "16", "--total-timesteps", "4096", "--num-seeds", "1", "--no-progress",
            "--no-compile-cache", "--run-dir", str(run_dir)]
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited from its first instruction, as a shell does it
    try:
        proc = subprocess.Popen([sys.executable, "-m", "jaxrl_po.train", *argv], cwd=tmp_path, env=cli_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, before)
    sent = 0
    while proc.poll() is None:  # from its start (loading), through compiling and training
        proc.send_signal(signal.SIGINT)
        sent += 1
        time.sleep(0.2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and sent >= 5, (sent, err[-3000:])
    assert "interrupted" not in out + err and "Ctrl-C" not in out + err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is False and summary["total_timesteps"] == 4096


def test_only_a_cli_run_with_python_m_changes_the_handlers_while_it_loads(monkeypatch):
    for argv, orig_argv, loading in [
        (["-m", "--algo", "ppo"], ["python", "-m", "jaxrl_po.train", "--algo", "ppo"], True),
        (["-m"], ["python", "-X", "importtime", "-mjaxrl_po.plot"], True),
        (["-m", "--help"], ["python", "-um", "jaxrl_po.train", "--help"], True),  # options joined to -m
        (["-m", "x"], ["python", "-Bumjaxrl_po.evaluate", "x"], True),
        (["-m", "jaxrl_po.train"], ["python", "-m", "other.tool", "jaxrl_po.train"], False),
        (["-m"], ["python", "-m", "other.tool"], False),  # a tool of another package that imports jaxrl_po
        (["-m"], ["python", "-m", "jaxrl_po.config"], False),  # not a CLI: nothing would end the exit at once
        (["/x/jaxrl_po/train.py"], ["python", "-m", "jaxrl_po.train"], False),  # found: its main has begun
        (["-c"], ["python", "-c", "import jaxrl_po"], False),
        (["script.py"], ["python", "script.py", "-m", "jaxrl_po.train"], False),
    ]:
        monkeypatch.setattr(sys, "argv", argv)
        monkeypatch.setattr(sys, "orig_argv", orig_argv)
        assert stop.loading_a_cli() is loading, orig_argv


def test_the_first_stop_at_once_takes_over_from_the_loading_handler_with_no_gap(monkeypatch, unraisable):
    """Putting the handlers from before loading back, then installing its own, left a moment in which a
    SIGTERM killed the CLI without a line (SIG_DFL)."""
    monkeypatch.setattr(sys, "argv", ["-m"])
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-m", "jaxrl_po.train"])
    monkeypatch.setattr(stop, "_replaced_while_loading", None)
    stop.stop_at_once_while_a_cli_loads()
    assert signal.getsignal(signal.SIGTERM) == stop._exit_at_once
    installed, real_signal = [], signal.signal
    monkeypatch.setattr(signal, "signal", lambda signum, handler: installed.append(handler) or real_signal(signum, handler))
    with StopAtOnce() as context:
        assert installed == [context._handle] * len(stop.STOP_SIGNALS)  # in place of the loading handler at once
    assert stop._replaced_while_loading is None  # the handlers from before loading are back (the fixture checks)
