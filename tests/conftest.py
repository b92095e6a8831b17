"""Shared helpers for the PPO tests (light: importing this starts XLA and compiles one tiny program)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from typing import Any

import jax

# The tests compile about a thousand XLA programs on a 2-core CPU, most of them tiny. XLA's
# backend optimisations cost about 2/3 of each compile and buy nothing at these sizes, so the
# test processes compile with them off: pytest's own (below) and the CLI subprocesses
# (``cli_env``). The learning tests, whose runs are long, compile with XLA's defaults
# (``full_jit``); so do the notebook and the CLI-defaults run (their processes start without
# FAST_XLA_FLAGS).
FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
}
FULL_COMPILE = {  # XLA's defaults for the same three options
    "xla_backend_optimization_level": 3,
    "xla_llvm_disable_expensive_passes": False,
    "xla_cpu_use_fusion_emitters": True,
}
KNOWN_FLAGS_VARIABLE = "JAXRL_PO_TEST_KNOWN_XLA_FLAGS"


def xla_flags_text(flags: dict[str, Any]) -> str:
    return " ".join(f"--{name}={str(value).lower()}" for name, value in flags.items())


def _known_xla_flags(names: list[str]) -> list[str]:
    """The flags in ``names`` that this jaxlib's XLA knows.

    XLA aborts the whole process on a flag in ``XLA_FLAGS`` that it does not know, naming it
    ("Unknown flag in XLA_FLAGS: --name=..."; jaxlib 0.11 dropped ``xla_cpu_use_fusion_emitters``),
    so they are tried in a subprocess and each flag XLA names is dropped. Any other failure is
    raised with the subprocess's last words. Found once: pytest-xdist's workers inherit the answer
    through the environment, for this interpreter and jaxlib only (a value left from another is probed again).
    """
    for_this_xla = f"{sys.executable} jaxlib {importlib.metadata.version('jaxlib')}:"
    saved = os.environ.get(KNOWN_FLAGS_VARIABLE, "")
    if saved.startswith(for_this_xla):
        return [n for n in saved.removeprefix(for_this_xla).split(",") if n]
    found = list(names)
    while True:
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags_text({n: FAST_COMPILE[n] for n in found})}
        probe = subprocess.run([sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(0)"], env=env,
                               capture_output=True, text=True, timeout=300)
        if probe.returncode == 0:
            break
        unknown = [n for n in found if f"Unknown flag in XLA_FLAGS: --{n}=" in probe.stderr]
        if not unknown:
            raise RuntimeError(f"trying the tests' XLA flags {found} failed:\n{probe.stderr[-2000:]}")
        found = [n for n in found if n not in unknown]
    os.environ[KNOWN_FLAGS_VARIABLE] = for_this_xla + ",".join(found)
    return found


_KNOWN = _known_xla_flags(list(FAST_COMPILE))
FAST_COMPILE = {n: v for n, v in FAST_COMPILE.items() if n in _KNOWN}
FULL_COMPILE = {n: v for n, v in FULL_COMPILE.items() if n in _KNOWN}
FAST_XLA_FLAGS = xla_flags_text(FAST_COMPILE)


def _start_xla_with_fast_compile() -> None:
    """Make FAST_COMPILE this process's default, leaving ``os.environ`` as it was for subprocesses.

    XLA reads ``XLA_FLAGS`` once, when it is first used; a ``compiler_options`` argument
    to ``jax.jit`` still overrides it for one program.
    """
    saved = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = f"{saved or ''} {FAST_XLA_FLAGS}".strip()
    try:
        jax.jit(lambda x: x + 1)(0)
    finally:
        if saved is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = saved


_start_xla_with_fast_compile()


def _stop_signals_not_ignored() -> None:
    """The CLIs leave an ignored stop signal ignored, as Python does, and a shell starts a background job
    (pytest run with ``&`` from a script, say) with SIGINT ignored. The tests send stop signals to the
    CLIs, in process and as subprocesses (which inherit what is ignored): they need them not ignored."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        if signal.getsignal(signum) is signal.SIG_IGN:
            signal.signal(signum, default)


_stop_signals_not_ignored()


def full_jit(fun, **kwargs):
    """``jax.jit`` with XLA's default optimisations, for long runs (the learning tests)."""
    return jax.jit(fun, compiler_options=FULL_COMPILE, **kwargs)


import pytest

from jaxrl_po.config import PPOConfig


def tiny_ppo_config(**overrides: Any) -> PPOConfig:
    """A CartPole PPO config small enough to compile and run in a few seconds on 2 CPU cores."""
    base = dict(
        env="CartPole-v1",
        num_envs=8,
        num_steps=4,
        num_minibatches=2,
        update_epochs=2,
        total_timesteps=8 * 4 * 6,  # 6 updates
        hidden_sizes=(8,),
    )
    base.update(overrides)
    return PPOConfig(**base)


@pytest.fixture(scope="session")
def make_tiny_ppo_config():
    return tiny_ppo_config


def run_handler(signum: int = signal.SIGTERM) -> None:
    """The installed handler of ``signum``, run as the signal would run it (in the main thread, between bytecodes)."""
    signal.getsignal(signum)(signum, None)


def cli_env(cpu_devices: int | None = None) -> dict[str, str]:
    """Environment for CLI subprocesses: CPU only (the test machine has no accelerator), as
    ``cpu_devices`` JAX devices if given (XLA's forced host device count).

    W&B offline: a ``--wandb`` run writes its W&B run under the run directory and
    never contacts a server. A wide console: rich wraps a line at 80 columns when
    output is not a terminal, so a message holding a long temporary path
    (``pytest-of-<user>/pytest-<n>/...``) would be split where a test looks for it.
    """
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["WANDB_MODE"] = "offline"
    env.setdefault("XLA_FLAGS", FAST_XLA_FLAGS)
    if cpu_devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={cpu_devices} {FAST_XLA_FLAGS}"
    env["COLUMNS"] = "1000"
    return env


def run_cli(argv: list[str], cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m jaxrl_po.train *argv`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "jaxrl_po.train", *argv],
        cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout,
    )


def start_cli(argv: list[str], cwd) -> subprocess.Popen:
    """Start ``python -m jaxrl_po.train *argv`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "jaxrl_po.train", *argv],
        cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# Importing jaxrl_po (jax + gymnax + its plotting deps) takes ~3-5 s of CPU per process on
# the 2-core test machine, so ~20 separate `python -m jaxrl_po.train <bad flags>` processes
# would cost over a minute. This driver imports the package once (exactly what
# `python -m jaxrl_po.train` imports before running the module) and then runs each case in
# turn: `jaxrl_po.train` executed as `__main__` with runpy -- the code path of `python -m` --
# with the real stdout/stderr file descriptors redirected to files for the case. An uncaught
# exception prints a traceback and gives exit code 1, as the interpreter would. (Forking a
# child per case is not an option: validation creates JAX arrays, and XLA's CPU runtime
# deadlocks in a forked child.) A case that hangs ends the driver through faulthandler.
_CASE_DRIVER = textwrap.dedent(
    r"""
    import faulthandler, json, os, runpy, sys, tempfile, traceback
    import jaxrl_po  # the package `python -m jaxrl_po.train` imports first
    cases = json.load(sys.stdin)
    results = {}
    real_stdout, real_stderr = os.dup(1), os.dup(2)
    home = os.getcwd()
    for name, case in cases.items():
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            os.chdir(case["cwd"])
            sys.argv = ["jaxrl_po.train", *case["argv"]]
            faulthandler.dump_traceback_later(case.get("timeout", 60), exit=True, file=real_stderr)
            try:
                runpy.run_module("jaxrl_po.train", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exit_:
                if exit_.code is None:
                    code = 0
                elif isinstance(exit_.code, int):
                    code = exit_.code
                else:
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                faulthandler.cancel_dump_traceback_later()
                sys.stdout.flush(); sys.stderr.flush()
                os.dup2(real_stdout, 1)
                os.dup2(real_stderr, 2)
                os.chdir(home)
            out.seek(0); err.seek(0)
            results[name] = {
                "rc": code,
                "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace"),
            }
    assert "jaxrl_po.train" not in sys.modules  # each case ran the module afresh
    sys.stdout.write("\n" + json.dumps(results) + "\n")
    """
)


def run_cli_cases(cases: dict[str, dict[str, Any]], timeout: float = 300) -> dict[str, dict[str, Any]]:
    """Run many short CLI invocations (``{id: {"argv": [...], "cwd": str}}``) in one interpreter.

    Returns ``{id: {"rc": int, "stdout": str, "stderr": str}}``.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _CASE_DRIVER],
        input=json.dumps(cases), env=cli_env(), capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"CLI case driver failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def cli():
    """CLI helpers: ``run`` / ``start`` one real subprocess, ``run_cases`` many short ones."""
    return SimpleNamespace(run=run_cli, start=start_cli, run_cases=run_cli_cases)


# ---- CLI runs started in the background -------------------------------------------------
# Each CLI training run spends several seconds compiling in its own process (its compile cache
# goes to the session's temporary directory, not ~/.cache). In one process (`pytest -n 0`) they
# are started when the session begins (only if a selected test uses them), so that on the 2-core
# machine they compile while the in-process tests run, and test_cli.py just collects their
# results; under pytest-xdist (the default) the other worker keeps the second core busy instead.
#
# --hidden-sizes 16 16 keeps these runs small (they only check the CLI's files and output).
CLI_TIMEOUT_S = 180
CLI_BACKGROUND_RUNS = {
    "ppo": [
        "--num-envs", "8", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
        "--total-timesteps", "1024", "--num-seeds", "2", "--hidden-sizes", "16", "16",
        "--run-dir", "{base}/ppo", "--compile-cache-dir", "{base}/xla-cache",
    ],
    # The same as "ppo" on one CPU device ("ppo" spreads its 2 seeds over the cores).
    "ppo-one-device": [
        "--num-envs", "8", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
        "--total-timesteps", "1024", "--num-seeds", "2", "--hidden-sizes", "16", "16",
        "--run-dir", "{base}/ppo-one-device", "--compile-cache-dir", "{base}/xla-cache", "--cpu-devices", "1",
    ],
    "grpo": [
        "--algo", "grpo", "--num-envs", "8", "--grpo.group-size", "4", "--num-minibatches", "2",
        "--update-epochs", "1", "--total-timesteps", "200", "--grpo.horizon", "20",
        "--grpo.chunk-size", "10", "--num-seeds", "2", "--hidden-sizes", "16", "16",
        "--run-dir", "{base}/grpo", "--compile-cache-dir", "{base}/xla-cache",
    ],
    # A bad command line run as a plain subprocess, to compare with the case driver above.
    "algo-sac": ["--algo", "sac", "--run-dir", "{base}/never"],
}


@pytest.fixture(scope="session")
def cli_background(tmp_path_factory):
    """``result(name) -> (returncode, stdout, stderr)`` of the runs in CLI_BACKGROUND_RUNS."""
    base = tmp_path_factory.mktemp("cli_background")
    argvs = {name: [a.format(base=base) for a in argv] for name, argv in CLI_BACKGROUND_RUNS.items()}
    procs = {name: start_cli(argv, cwd=base) for name, argv in argvs.items()}
    results = {}

    def result(name: str):
        if name not in results:
            try:
                out, err = procs[name].communicate(timeout=CLI_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                procs[name].kill()
                out, err = procs[name].communicate()
                pytest.fail(
                    f"`python -m jaxrl_po.train {' '.join(argvs[name])}` did not finish within "
                    f"{CLI_TIMEOUT_S} s\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}"
                )
            results[name] = (procs[name].returncode, out, err)
        return results[name]

    yield SimpleNamespace(base=base, argvs=argvs, result=result)
    for proc in procs.values():  # only when a test stopped before collecting a result
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# The slowest test files (by CI's --durations), run first. pytest-xdist hands each worker one
# file at a time in collection order (`--no-loadscope-reorder` in pyproject.toml; by default it
# puts files with fewer tests last, and those are the slow ones), so the two workers end
# together on short files instead of one waiting while the other runs the notebook.
SLOWEST_FILES_FIRST = ("test_notebook.py", "test_learning.py", "test_presets.py", "test_evaluate.py",
                       "test_checkpoint.py", "test_sweep.py", "test_distributed.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return SLOWEST_FILES_FIRST.index(name) if name in SLOWEST_FILES_FIRST else len(SLOWEST_FILES_FIRST)

    items.sort(key=rank)  # stable: tests keep their order within a file


@pytest.fixture(scope="session", autouse=True)
def _start_cli_background_early(request):
    # Under pytest-xdist every worker collects every test but runs only some files, so starting
    # early would train these runs once per worker; there they start when test_cli.py asks.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any("cli_background" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("cli_background")
