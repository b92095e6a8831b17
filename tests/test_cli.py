"""Command line (``python -m jaxrl_po.train``): tiny real runs and one-line errors for bad input.

The PPO and GRPO training runs (see ``CLI_BACKGROUND_RUNS`` in conftest) are real
subprocesses started in the background when the session starts, so they compile while other
tests run. The bad-input cases run through ``cli.run_cases`` (conftest): one interpreter
imports the package once and runs ``jaxrl_po.train`` as ``__main__`` (what ``python -m``
does) for each case, with its stdout/stderr captured at the file-descriptor level. One case
is also run as a plain subprocess and must give the same result.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path

import jax
import jaxlib
import numpy as np
import pytest

from conftest import cli_env
from jaxrl_po.config import ConfigError, PPOConfig, from_dict

PROJECT_VERSION = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
SUMMARY_KEYS = {
    "final_return_mean", "final_return_per_seed", "total_timesteps", "num_seeds", "sps", "compile_s", "train_s",
}


# ---- bad input -----------------------------------------------------------------------
# (id, argv, the flag the message must name, other text the message must contain)
BAD_CASES = [
    ("env-unknown", ["--env", "NoSuchEnv-v9"], "--env", ["NoSuchEnv-v9", "CartPole-v1", "Pendulum-v1"]),
    ("algo-unknown", ["--algo", "sac"], "--algo", ["sac", "ppo", "grpo"]),
    # '' fell back to ppo (an `or`) and tyro then refused it in its own words.
    ("algo-empty", ["--algo", ""], "--algo", ["error: --algo: unknown algorithm ''; valid: ppo, grpo"]),
    ("num-envs-zero", ["--num-envs", "0"], "--num-envs", []),
    ("num-envs-negative", ["--num-envs", "-3"], "--num-envs", ["-3"]),
    ("num-envs-float", ["--num-envs", "1.5"], "--num-envs", ["1.5"]),
    ("num-steps-zero", ["--num-steps", "0"], "--num-steps", []),
    (
        "minibatches-indivisible",
        ["--num-envs", "6", "--num-steps", "5", "--num-minibatches", "4"],
        "--num-minibatches", ["30", "4"],
    ),
    (
        "minibatch-of-one-sample",  # norm_adv would zero every advantage
        ["--num-envs", "2", "--num-steps", "2", "--num-minibatches", "4", "--total-timesteps", "8"],
        "--num-minibatches", ["1 sample each", "--no-norm-adv"],
    ),
    ("log-std-init-nan", ["--log-std-init", "nan"], "--log-std-init", ["finite", "nan"]),
    ("log-std-init-discrete", ["--log-std-init", "-0.5"], "--log-std-init", ["CartPole-v1", "discrete", "0.0"]),
    # Training computes in float32: 1e-46 is 0 there and 1e39 is inf.
    ("lr-zero-in-float32", ["--lr", "1e-46"], "--lr", ["1e-46", "0.0 in float32"]),
    ("vf-coef-past-float32", ["--vf-coef", "1e39"], "--vf-coef", ["finite", "float32", "1e+39"]),
    ("clip-eps-zero", ["--clip-eps", "0"], "--clip-eps", []),
    ("clip-eps-big", ["--clip-eps", "1.5"], "--clip-eps", ["1.5"]),
    ("gamma-big", ["--gamma", "1.5"], "--gamma", ["1.5"]),
    ("gae-lambda-negative", ["--gae-lambda", "-0.1"], "--gae-lambda", ["-0.1"]),
    (
        "total-timesteps-below-one-update",
        ["--num-envs", "8", "--num-steps", "16", "--total-timesteps", "100"],
        "--total-timesteps", ["100", "128"],
    ),
    ("run-dir-under-a-file", ["--run-dir", "{file}/sub"], "--run-dir", []),
    ("run-dir-not-empty", ["--run-dir", "{full_dir}"], "--run-dir", ["exists"]),
    ("run-dir-empty", ["--run-dir", ""], "--run-dir", ["must name a path, got ''"]),  # not the default silently
    ("resume-empty", ["--resume", " "], "--resume", ["must name a path, got ' '"]),  # not a fresh run silently
    ("grpo-group-size-1", ["--algo", "grpo", "--grpo.group-size", "1"], "--grpo.group-size", []),
    (
        "grpo-num-envs-not-multiple",
        ["--algo", "grpo", "--num-envs", "10", "--grpo.group-size", "4"],
        "--num-envs", ["10", "4"],
    ),
    ("grpo-with-a-ppo-flag", ["--algo", "grpo", "--num-steps", "8"], "--num-steps",
     ["a setting of --algo ppo, not of --algo grpo"]),
    ("ppo-with-a-grpo-flag", ["--grpo.no-shared-reset"], "--grpo.shared-reset", ["a setting of --algo grpo"]),
    ("grpo-horizon-above-env-limit", ["--algo", "grpo", "--grpo.horizon", "1000"], "--grpo.horizon",
     ["1000", "episode limit", "at most 500"]),
    (
        "grpo-one-update-past-int32",  # 8M envs x 500 steps: 4e9 alive steps in one update
        ["--algo", "grpo", "--num-envs", "8000000", "--num-minibatches", "1", "--total-timesteps", "100000000"],
        "--num-envs", ["4,000,000,000", "int32"],
    ),
    (
        "grpo-clip-high-below-clip",
        ["--algo", "grpo", "--clip-eps", "0.2", "--grpo.clip-eps-high", "0.1"],
        "--grpo.clip-eps-high", ["0.1", "0.2"],
    ),
    (
        "will-not-fit",  # 64 runs x 65536 envs x 1024 steps: ~288 GiB of rollout buffers (one run would fit)
        ["--num-envs", "65536", "--num-steps", "1024", "--num-seeds", "64", "--total-timesteps", "67108864"],
        "--num-seeds", ["will not fit", "GiB"],
    ),
    (   # 2 x 1e10 weights with Adam's moments: 224 GiB before any rollout (it used to compile, then hang)
        "network-will-not-fit", ["--hidden-sizes", "100000", "100000", "--total-timesteps", "2e4"],
        "--hidden-sizes", ["will not fit", "rollout buffers 0.0 GiB, parameters and optimiser state"],
    ),
    ("checkpoint-every-negative", ["--checkpoint-every", "-1"], "--checkpoint-every", ["-1"]),
    ("keep-checkpoints-zero", ["--keep-checkpoints", "0"], "--keep-checkpoints", []),
    # One device per core (1 or 2 here): 3 divides neither; joining flags need --distributed.
    ("env-shards-not-a-divisor", ["--env-shards", "3"], "--env-shards", ["divisor of the device count", "3"]),
    ("cpu-devices-zero", ["--cpu-devices", "0"], "--cpu-devices", ["1 .. 1024", "0"]),
    ("cpu-devices-huge", ["--cpu-devices", "1000000"], "--cpu-devices", ["1 .. 1024", "1000000"]),
    ("grad-piece-size-negative", ["--grad-piece-size", "-1"], "--grad-piece-size", ["non-negative integer", "-1"]),
    ("process-id-without-distributed", ["--process-id", "1"], "--process-id", ["--distributed"]),
    # JAX passes the address on unchecked: no port was an IndexError inside JAX, a port that is
    # not a number a segmentation fault in XLA's coordinator.
    (
        "coordinator-address-without-port",
        ["--distributed", "--coordinator-address", "localhost", "--num-processes", "2", "--process-id", "1"],
        "--coordinator-address", ["HOST:PORT", "'localhost'"],
    ),
    (
        "coordinator-port-not-a-number",
        ["--distributed", "--coordinator-address", "localhost:abc", "--num-processes", "1", "--process-id", "0"],
        "--coordinator-address", ["1 .. 65535", "'localhost:abc'"],
    ),
    # tyro's own messages named neither the flag nor the fix.
    ("switch-given-a-value", ["--norm-adv", "False"], "--norm-adv", ["takes no value (got False)", "--no-norm-adv"]),
    ("list-that-does-not-parse", ["--hidden-sizes", "64", "abc"], "--hidden-sizes", ["cannot read", "abc", "--help"]),
    ("optional-int-not-an-int", ["--env-shards", "1.5"], "--env-shards",
     ["must be an integer (e.g. 100, 1_000 or 1e3) or None, got '1.5'"]),
    ("wandb-project-without-wandb", ["--wandb-project", "mine"], "--wandb-project", ["only applies with --wandb"]),
    ("compile-cache-dir-without-cache", ["--no-compile-cache", "--compile-cache-dir", "{full_dir}"],
     "--compile-cache-dir", ["only applies with --compile-cache"]),
    # tyro also takes the underscore spelling of a flag; the checks above must see it too.
    ("wandb-entity-underscored-without-wandb", ["--wandb_entity=me"], "--wandb-entity", ["only applies with --wandb"]),
    (
        "process-id-out-of-range",
        ["--distributed", "--num-processes", "2", "--process-id", "2"],
        "--process-id", ["0 .. 1", "2"],
    ),
    # Like --env and --algo, an unknown choice should say which values are valid.
    ("grpo-loss-type-unknown", ["--algo", "grpo", "--grpo.loss-type", "nope"], "--grpo.loss-type", ["nope", "dapo"]),
    ("conv-on-vector-obs", ["--conv-channels", "16"], "--conv-channels", ["image", "(4,)"]),
    ("config-file-missing", ["--config", "{file}.yaml"], "--config", ["cannot read"]),
    ("config-without-value", ["--config"], "--config", ["Missing value"]),
    ("seed-past-uint32", ["--seed", "4294967295", "--num-seeds", "2"], "--seed", ["4294967294", "4294967295"]),
    ("num-seeds-past-uint32", ["--num-seeds", "5e9"], "--num-seeds", ["2**32", "5000000000"]),
    # A repeated --sweep name would silently drop the first values; a repeated value trains twice.
    ("sweep-name-twice", ["--sweep", "lr=1e-3,2e-3", "--sweep", "lr=5e-3"], "--sweep", ["lr is given twice"]),
    ("sweep-value-twice", ["--sweep", "lr=1e-3,0.001"], "--sweep", ["0.001 is given twice", "--num-seeds"]),
    ("sweep-value-twice-in-float32", ["--sweep", "lr=1e-3,0.0010000000000000002"], "--sweep",
     ["0.001 is given twice", "equals 0.001 in float32"]),
    # The sweep would win and the flag be ignored, yet config.json would record the flag's value.
    ("sweep-and-flag", ["--sweep", "lr=1e-3", "--lr", "5e-4"], "--sweep", ["lr is swept and also set by --lr"]),
    ("sweep-and-underscored-flag", ["--sweep", "ent_coef=0,0.01", "--ent_coef", "0.1"], "--sweep",
     ["ent_coef is swept and also set by --ent-coef"]),
    ("sweep-and-grpo-flag", ["--algo", "grpo", "--sweep", "kl_coef=0,0.1", "--grpo.kl-coef=0.2"], "--sweep",
     ["kl_coef is swept and also set by --grpo.kl-coef"]),
    ("compile-cache-dir-under-a-file", ["--compile-cache-dir", "{file}/cache"], "--compile-cache-dir",
     ["--no-compile-cache"]),
    ("config-file-unknown-setting", ["--config", "{bad_yaml}"], "--config", ["unknown setting 'num_env'", "num_envs"]),
    # 60**5 grid points: the fit check now comes before the points are built and checked (that took hours).
    ("sweep-grid-too-big-to-run", [arg for name, start in (("lr", 1e-4), ("clip_eps", 1e-3), ("gamma", 0.01),
                                                            ("ent_coef", 1e-3), ("max_grad_norm", 0.1))
                                   for arg in ("--sweep", f"{name}=" + ",".join(f"{start * (i + 1):.6g}" for i in range(60)))],
     "--sweep", ["will not fit", "swept values"]),  # its 7.8e8 points, not the 4 seeds (named before)
    # Counts reach the device as int32: these were an OverflowError from inside jit (or after compiling).
    # total_timesteps has a lower limit of its own (room for one update's overshoot): the int32 one must not
    # pre-empt it, or the line offers 2,147,483,647, which is refused too.
    ("total-timesteps-past-int32", ["--total-timesteps", "3e9"], "--total-timesteps", ["above 2,130,706,432"]),
    ("preset-empty", ["--preset", ""], "--preset", ["unknown preset ''", "cartpole-ppo"]),  # trained the defaults
    ("update-epochs-past-int32", ["--update-epochs", "2147483648"], "--update-epochs", ["2,147,483,647", "int32"]),
    ("checkpoint-every-past-int32", ["--checkpoint-every", "2147483648"], "--checkpoint-every", ["2,147,483,647"]),
    ("grad-piece-size-past-int32", ["--grad-piece-size", "18446744073709551616"], "--grad-piece-size",
     ["2,147,483,647"]),
    ("grpo-ref-sync-every-past-int32", ["--algo", "grpo", "--grpo.ref-sync-every", "1e30"], "--grpo.ref-sync-every",
     ["2,147,483,647"]),
    ("grpo-chunk-size-past-int32", ["--algo", "grpo", "--grpo.chunk-size", "2147483648"], "--grpo.chunk-size",
     ["2,147,483,647"]),
]
RUN_DIR_CASES = {"run-dir-under-a-file", "run-dir-not-empty", "run-dir-empty"}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, cli, cli_background):
    base = tmp_path_factory.mktemp("cli_bad")
    a_file = base / "a_file"
    a_file.write_text("not a directory\n")
    full_dir = base / "full_dir"
    full_dir.mkdir()
    (full_dir / "keep.txt").write_text("precious\n")
    bad_yaml = base / "bad.yaml"
    bad_yaml.write_text("num_env: 8\n")
    cases, argvs, never = {}, {}, {}
    for case_id, argv, _, _ in BAD_CASES:
        argv = [a.format(file=a_file, full_dir=full_dir, bad_yaml=bad_yaml) for a in argv]
        if case_id not in RUN_DIR_CASES:
            never[case_id] = base / "never" / case_id
            argv = argv + ["--run-dir", str(never[case_id])]
        argvs[case_id] = argv
        cases[case_id] = {"argv": argv, "cwd": str(base)}
    cases["help"] = {"argv": ["--help"], "cwd": str(base)}
    cases["help-grpo"] = {"argv": ["--algo", "grpo", "--help"], "cwd": str(base)}
    cases["real-compare"] = {"argv": cli_background.argvs["algo-sac"], "cwd": str(cli_background.base)}
    results = cli.run_cases(cases)
    return dict(results=results, argvs=argvs, never=never, base=base, a_file=a_file, full_dir=full_dir)


@pytest.mark.parametrize("case_id, argv, flag, must_contain", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_one_line_error_exit_2(bad_inputs, case_id, argv, flag, must_contain):
    res = bad_inputs["results"][case_id]
    stderr, stdout = res["stderr"], res["stdout"]
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert res["rc"] == 2, (res["rc"], stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith("error:"), line
    assert flag in line, line
    for text in must_contain:
        assert text in line, f"{text!r} missing from: {line}"
    # Naming the flag must not just mean echoing the command line back.
    assert " ".join(bad_inputs["argvs"][case_id]) not in line, line
    # Validation happens before anything is written.
    if case_id in bad_inputs["never"]:
        assert not bad_inputs["never"][case_id].exists()
        assert not (bad_inputs["base"] / "never").exists()
    assert not (bad_inputs["base"] / "runs").exists()  # nor a default run directory


def test_a_bad_coordinator_address_from_the_environment_is_refused_before_joining(monkeypatch):
    from jaxrl_po import train

    for good in ("localhost:1234", "[::1]:65535", "10.0.0.1:1"):
        train.check_coordinator_address(good)
    for unbracketed in ("fe80::1:8476", "::1:1234"):  # host fe80::1 or fe80:, port 1:8476 or 8476?
        with pytest.raises(ConfigError, match=r"IPv6 host goes in brackets"):
            train.check_coordinator_address(unbracketed)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:99999")
    with pytest.raises(ConfigError, match=r"port in 1 \.\. 65535, got '10.0.0.1:99999' \(\$JAX_COORDINATOR_ADDRESS\)"):
        train.join_processes(["--distributed", "--num-processes", "2", "--process-id", "1"])


def test_a_closed_stdout_at_the_start_leaves_the_run_dir_free_for_a_rerun(tmp_path):
    """As `train ... | head -1` can: rich ended the CLI with SystemExit(1) at its first print after the run
    directory was made. That left an empty checkpoints/ there, and the same --run-dir was then refused.
    Now it stops as a Ctrl-C before training does, with SIGPIPE's exit code."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout fails with EPIPE (Python ignores SIGPIPE)
    run_dir = tmp_path / "run"
    try:
        result = subprocess.run([sys.executable, "-m", "jaxrl_po.train", "--total-timesteps", "512", "--num-envs",
                                 "32", "--num-seeds", "1", "--no-progress", "--run-dir", str(run_dir)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=tmp_path,
                                timeout=180)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == "stdout closed before training started; nothing was saved\n"
    assert not run_dir.exists()


@pytest.mark.parametrize("setting, message", [
    # A platform this machine lacks (gpu on a CPU machine, say): JAX's RuntimeError came from gymnax's first
    # array, as a traceback. 'bogus' is missing on every machine.
    ({"JAX_PLATFORMS": "bogus"}, "error: JAX cannot start its backend here (JAX_PLATFORMS=bogus: leave it unset"),
    # The metrics hold NaN by design, so JAX_DEBUG_NANS stopped every run with a traceback from inside jit.
    ({"JAX_DEBUG_NANS": "1"}, "error: JAX_DEBUG_NANS is on, but a run's metrics hold NaN by design"),
], ids=["jax-platforms-missing", "jax-debug-nans"])
def test_a_jax_setting_that_cannot_work_is_one_line(tmp_path, setting, message):
    result = subprocess.run([sys.executable, "-m", "jaxrl_po.train", "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, env={**cli_env(), **setting}, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(message), line
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_left_untouched(bad_inputs):
    full_dir = bad_inputs["full_dir"]
    assert sorted(p.name for p in full_dir.iterdir()) == ["keep.txt"]
    assert (full_dir / "keep.txt").read_text() == "precious\n"
    assert bad_inputs["a_file"].read_text() == "not a directory\n"
    assert not (bad_inputs["base"] / "runs").exists()


def test_a_run_directory_is_taken_by_one_run_only(tmp_path, monkeypatch):
    """Two runs started together never share a directory: the second gets another default name or an error."""
    from jaxrl_po import train
    from jaxrl_po.logs import make_run_dir

    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_run_dir(empty) is False and make_run_dir(tmp_path / "new") is True
    for taken in (empty, tmp_path / "new"):  # already taken (its checkpoint directory exists), though nothing is saved yet
        with pytest.raises(FileExistsError, match="already exists and is not empty"):
            make_run_dir(taken)
    # Only W&B's logs (a run whose W&B run could not start): free; with anything else beside them: taken.
    (tmp_path / "wandb-only" / "wandb" / "run-1").mkdir(parents=True)
    assert make_run_dir(tmp_path / "wandb-only") is False
    (tmp_path / "wandb-and-more" / "wandb").mkdir(parents=True)
    (tmp_path / "wandb-and-more" / "notes.txt").write_text("mine\n")
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        make_run_dir(tmp_path / "wandb-and-more")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train.time, "time", lambda: 1.8e9)  # both start in the same second
    options, config = train.parse(["--num-seeds", "1"])
    first, second = train.open_run_dir(options, config), train.open_run_dir(options, config)
    name = f"runs/ppo-CartPole-v1-{datetime.fromtimestamp(1.8e9):%Y%m%d-%H%M%S}"
    assert first == (Path(name), True) and second == (Path(f"{name}-2"), True)
    named = train.parse(["--run-dir", str(empty)])[0]
    with pytest.raises(train.ConfigError, match="already exists and is not empty"):
        train.open_run_dir(named, config)


def test_path_options_expand_a_quoted_tilde(tmp_path, monkeypatch):
    """``--run-dir '~/x'`` means the home directory, as the shell reads it unquoted, in every path option."""
    from jaxrl_po import train

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "settings.yaml").write_text("lr: 1e-3\n")
    options, config = train.parse(["--run-dir", "~/x", "--config", "~/settings.yaml", "--compile-cache-dir", "~/c"])
    assert (options.run_dir, options.config, options.compile_cache_dir) == (
        str(tmp_path / "x"), str(tmp_path / "settings.yaml"), str(tmp_path / "c"))
    assert config.lr == 1e-3
    assert train.parse([])[0].compile_cache_dir == str(tmp_path / ".cache" / "jaxrl_po" / "xla")
    with pytest.raises(train.ConfigError, match="no-such-run is not a run directory") as err:
        train.parse(["--resume", "~/no-such-run"])
    assert err.value.message.endswith(f"({tmp_path / 'no-such-run' / 'config.json'}: No such file or directory)")


def test_help(bad_inputs):
    res = bad_inputs["results"]["help"]
    assert res["rc"] == 0, res["stderr"]
    assert "Traceback" not in res["stderr"]
    assert "--num-seeds" in res["stdout"] and "--gae-lambda" in res["stdout"]
    res = bad_inputs["results"]["help-grpo"]
    assert res["rc"] == 0, res["stderr"]
    assert "--grpo.group-size" in res["stdout"]


def test_case_driver_matches_a_real_subprocess(bad_inputs, cli_background):
    """The case driver gives what ``python -m jaxrl_po.train`` gives for the same argv and cwd."""
    rc, out, err = cli_background.result("algo-sac")
    driven = bad_inputs["results"]["real-compare"]
    assert rc == driven["rc"] == 2
    assert err == driven["stderr"]
    assert out == driven["stdout"]
    assert err.startswith("error: --algo") and "Traceback" not in err
    assert not (cli_background.base / "never").exists()


# ---- real runs --------------------------------------------------------------------------
def _assert_ok(rc, out, err):
    assert rc == 0, f"exit {rc}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    assert "Traceback" not in err


def test_ppo_run_writes_run_directory(cli_background):
    rc, out, err = cli_background.result("ppo")
    run_dir = cli_background.base / "ppo"
    _assert_ok(rc, out, err)
    assert {"config.json", "metrics.csv", "summary.json"} <= {p.name for p in run_dir.iterdir()}

    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == "ppo" and config["seeds"] == [0, 1]
    expected = PPOConfig(
        num_envs=8, num_steps=16, num_minibatches=2, update_epochs=1, total_timesteps=1024, hidden_sizes=(16, 16)
    )
    assert from_dict(PPOConfig, config) == expected

    with open(run_dir / "metrics.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        rows = list(reader)
    assert {"seed", "update", "env_steps", "episode_return"} <= set(header)
    num_updates = 1024 // (8 * 16)
    assert len(rows) == 2 * num_updates
    for seed in (0, 1):
        seed_rows = [r for r in rows if int(r["seed"]) == seed]
        assert [int(r["update"]) for r in seed_rows] == list(range(1, num_updates + 1))
        assert [int(r["env_steps"]) for r in seed_rows] == [128 * u for u in range(1, num_updates + 1)]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert len(summary["final_return_per_seed"]) == 2
    assert summary["num_seeds"] == 2
    a, b = summary["final_return_per_seed"]
    # Two seeds' 95% CI: t(0.975, 1) * sd(ddof=1) / sqrt(2) = 12.7062047 * |a - b| / 2
    assert summary["final_return_ci95"] == pytest.approx(12.7062047 * abs(a - b) / 2, rel=1e-7)
    assert "mean ± 95% CI" in out
    assert summary["total_timesteps"] == 1024
    assert summary["sps"] > 0 and summary["compile_s"] > 0 and summary["train_s"] > 0
    # What the numbers depend on: bit-identical results need the same versions.
    assert summary["versions"]["jax"] == jax.__version__ and summary["versions"]["jaxlib"] == jaxlib.__version__
    assert summary["versions"]["jaxrl_po"] == PROJECT_VERSION and summary["versions"]["gymnax"].startswith("1.0")


def _metric_rows(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_seeds_spread_over_cpu_cores_train_like_one_device(cli_background):
    # By default the CLI makes one CPU device per core and puts whole seeds on each
    # (train.split_cpu); --cpu-devices 1 keeps one. Both give the same runs, to float rounding.
    for name in ("ppo", "ppo-one-device"):
        _assert_ok(*cli_background.result(name))
    spread, single = (json.loads((cli_background.base / name / "summary.json").read_text())
                      for name in ("ppo", "ppo-one-device"))
    cores = min(len(os.sched_getaffinity(0)), 2)  # 2 seeds: at most 2 devices are used
    assert spread["mesh"] == {"runs": cores, "envs": 1} and spread["num_devices"] == cores
    assert single["mesh"] == {"runs": 1, "envs": 1} and single["num_devices"] == 1
    a, b = (_metric_rows(cli_background.base / name) for name in ("ppo", "ppo-one-device"))
    assert [(r["seed"], r["update"], r["env_steps"]) for r in a] == [(r["seed"], r["update"], r["env_steps"]) for r in b]
    # Only the first update: the layouts compile to other kernels, and once rounding flips a
    # sampled action the runs part (README, Reproducibility).
    first = [(ra, rb) for ra, rb in zip(a, b) if ra["update"] == "1"]
    assert len(first) == 2
    for ra, rb in first:  # the first update's episodes come from the same initial policy and keys
        assert ra["episode_return"] == rb["episode_return"] and ra["episodes"] == rb["episodes"]
        for name in ("policy_loss", "value_loss", "entropy", "grad_norm"):
            np.testing.assert_allclose(float(ra[name]), float(rb[name]), rtol=1e-4, atol=1e-6, err_msg=name)


def test_grpo_run_writes_summary(cli_background):
    rc, out, err = cli_background.result("grpo")
    run_dir = cli_background.base / "grpo"
    _assert_ok(rc, out, err)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["algo"] == "grpo" and summary["num_seeds"] == 2
    assert len(summary["final_return_per_seed"]) == 2
    assert summary["total_timesteps"] >= 200
    assert (run_dir / "metrics.csv").exists() and (run_dir / "config.json").exists()


def test_progress_line_shows_each_runs_latest_finished_return():
    """Segments in which no episode ended (long episodes) keep the last value instead of n/a."""
    import io

    from jaxrl_po.logs import Progress

    out = io.StringIO()  # not a terminal: one plain line per 10% step
    progress = Progress(num_runs=2, steps_per_run=100, stream=out)
    nan = np.nan
    progress.report(np.array([20, 20]), 1, np.array([nan, nan]))  # nothing has finished yet
    progress.report(np.array([50, 50]), 2, np.array([10.0, nan]))  # run 1 has not finished one yet
    progress.report(np.array([60, 60]), 3, np.array([nan, nan]))  # none finished in this segment
    progress.report(np.array([100, 100]), 4, np.array([nan, 30.0]))
    returns = [line.split("mean return")[1].strip() for line in out.getvalue().splitlines()]
    assert returns == ["n/a", "10.0", "10.0", "20.0"]


@pytest.mark.parametrize("columns", [80, 40, 200])
def test_progress_line_on_a_terminal_fits_its_width(columns):
    """A line as wide as the terminal wraps, and each redraw then leaves a copy behind: the line
    drops its padding where the terminal is narrow (84 columns with it), and is cut short at worst."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    from jaxrl_po.logs import Progress

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    with open(follower, "w", closefd=True) as terminal:
        progress = Progress(num_runs=1, steps_per_run=10**6, stream=terminal)
        assert progress.live
        progress.report(np.array([348_160]), 85, np.array([382.4]))
        progress.report(np.array([1_000_000]), 244, np.array([np.nan]))
        progress.close()
        drawn = b""
        while not drawn.endswith(b"\r\n") and select.select([leader], [], [], 10)[0]:  # the pty passes it on in pieces
            drawn += os.read(leader, 4096)
    os.close(leader)
    drawn = drawn.decode().replace("\r\n", "\n")
    lines = drawn.split("\r")[1:]
    assert len(lines) == 2 and lines[-1].endswith("\n")
    assert all(len(line.rstrip("\n")) <= columns - 1 for line in lines), lines
    if columns >= 80:  # the return, the number one watches, is still there
        assert all(line.split("mean return")[1].strip() == "382.4" for line in lines), lines
    if columns == 80:
        assert lines[0].startswith("35%  update 85  env steps 348,160  SPS ")
    if columns == 200:  # wide enough: the same aligned line as in a pipe
        assert lines[0].startswith("  35%  update     85  env steps       348,160  SPS ")


def test_progress_line_in_a_pipe_shows_the_real_steps_and_always_the_last_line():
    """GRPO's last update may pass the budget: the fraction stops at 100% but the steps shown are
    the steps run. The end of training is printed even where it did not reach the next 10%
    (a run stopped on non-finite values, or a last segment that ended at 97%)."""
    import io

    from jaxrl_po.logs import Progress

    out = io.StringIO()
    progress = Progress(num_runs=2, steps_per_run=100, stream=out)
    progress.report(np.array([55, 50]), 1, np.array([np.nan, np.nan]))
    progress.report(np.array([60, 57]), 2, np.array([np.nan, np.nan]))  # 58.5%: no line of its own yet
    progress.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["52%", "58%"]
    assert "env steps           117" in lines[-1]

    out = io.StringIO()
    progress = Progress(num_runs=1, steps_per_run=100, stream=out)
    progress.report(np.array([112]), 5, np.array([3.0]))
    progress.close()
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith(" 100%")
    assert "env steps           112" in out.getvalue()
