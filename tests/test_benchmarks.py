"""The benchmark scripts: they never replace saved results unasked, and the throughput one runs PureJaxRL's config.

A full benchmark run takes minutes to hours, and the committed results are
what the README cites, so a rerun that would replace any of them is refused
before any work unless ``--overwrite`` is given; so is the plot or table a
script writes beside its JSON, and a quick run never mixes with a full run's
file. Adding rows or lines to a file (``--only``) is allowed and keeps
everything already there. Every bad input (a flag, an empty path, a directory
or another suffix for ``--out``) exits 2 with one line, before any work.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from jaxrl_po.logs import NOT_RESULTS
from jaxrl_po.ppo import uses_obs_normalization

from conftest import cli_env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCHMARKS / "results"
SCRIPTS = ("throughput.py", "memory.py", "grpo_vs_ppo.py", "scaling.py", "results.py")
OUT_SCRIPTS = SCRIPTS[:4]  # the scripts that write one JSON file, --out
# The functions each script's work starts with: a refusal must come before them.
WORK = {"throughput.py": ("dense_flop_rate",), "memory.py": ("train_job",), "grpo_vs_ppo.py": ("run_one",),
        "scaling.py": ("measure", "plot"), "results.py": ("run_preset", "report")}


def run_benchmark(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def load_benchmark(script: str):
    """The benchmark script as a module, in this process (its ``main`` reads ``sys.argv``)."""
    jax.devices()  # the backend is up: importing a script cannot change this process's devices
    if str(BENCHMARKS) not in sys.path:  # the scripts share benchmark_cli.py, beside them
        sys.path.append(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refusal(script: str, argv: list[str], monkeypatch, capsys) -> str:
    """The one-line error ``script`` exits 2 with (in this process: the refusal comes before any work)."""
    module = load_benchmark(script)
    for work in WORK[script]:
        monkeypatch.setattr(module, work, lambda *a, **k: pytest.fail(f"{script} started work, then refused"))
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no usage lines
    return err


def deny_writing(monkeypatch, *paths: Path) -> None:
    """``os.access`` says these paths cannot be written (the suite may run as root, whom permissions do not stop)."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: not (Path(path) in paths and mode & os.W_OK)
                        and real_access(path, mode))


class Started(Exception):
    """Raised by a stand-in for a script's work, with what the work was given."""


def run_main(module, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["script.py", *argv])
    module.main()


def fake_grpo_vs_ppo_runs(module, monkeypatch) -> list[tuple[str, int]]:
    """Stand in a saved row for each training run of grpo_vs_ppo.py, with the seeds asked for; the calls made."""
    saved = json.loads((RESULTS / "grpo_vs_ppo-cpu.json").read_text())["runs"][0]
    calls = []

    def run_one(name, algo, variant, config, num_seeds):
        calls.append((name, num_seeds))
        return {**saved, "name": name, "num_seeds": num_seeds, "final_return_per_seed": [500.0] * num_seeds}

    monkeypatch.setattr(module, "run_one", run_one)
    return calls


@pytest.mark.parametrize("script, saved, args, held", [
    ("throughput.py", "throughput-cpu-zen1.json", [], "a run of 4 cases (made 2026-11-23)"),
    ("memory.py", "memory-cpu.json", ["--quick"], "a run of 10,000 updates (made 2026-11-24)"),
    ("grpo_vs_ppo.py", "grpo_vs_ppo-cpu.json", ["--only", "acrobot-grpo-rtg"],
     "the row acrobot-grpo-rtg (date unknown)"),  # written before records carried their date
    ("grpo_vs_ppo.py", "grpo_vs_ppo-cpu.json", ["--only", "pendulum"],
     "the rows pendulum-ppo, pendulum-grpo, pendulum-grpo-rtg, pendulum-grpo-small-rtg (date unknown)"),
    ("scaling.py", "scaling-cpu.json", ["--only", "grpo/CartPole"],
     "the lines grpo/CartPole-v1 (num_envs sweep), grpo/CartPole-v1 (seeds sweep), random/CartPole-v1 (num_envs "
     "sweep), random/CartPole-v1 (seeds sweep) (made 2026-11-22)"),  # a line re-runs its env's random ceiling
    ("scaling.py", "scaling-cpu.json", ["--quick"], "a full run (made 2026-11-22)"),  # a quick run would drop it all
    ("grpo_vs_ppo.py", "grpo_vs_ppo-cpu.json", ["--quick", "--only", "cartpole-ppo"], "a full run (date unknown)"),
])
def test_benchmark_refuses_to_replace_saved_results(tmp_path, monkeypatch, capsys, script, saved, args, held):
    out = tmp_path / saved
    shutil.copy(RESULTS / saved, out)
    err = refusal(script, ["--out", str(out), *args], monkeypatch, capsys)
    assert f"error: --out: {out} already holds {held}. Pass --overwrite to replace" in err, err
    assert out.read_text() == (RESULTS / saved).read_text()


@pytest.mark.parametrize("script", ["throughput.py", "memory.py", "grpo_vs_ppo.py", "scaling.py"])
def test_benchmark_refuses_to_replace_a_file_it_cannot_read(tmp_path, monkeypatch, capsys, script):
    out = tmp_path / "notes.json"
    out.write_text("my notes, not JSON")
    err = refusal(script, ["--out", str(out), "--quick"], monkeypatch, capsys)
    assert f"error: --out: {out} already holds {NOT_RESULTS} (date unknown). Pass --overwrite" in err, err
    assert out.read_text() == "my notes, not JSON"


def test_scaling_adds_a_line_and_keeps_the_others(tmp_path):
    saved = json.loads((RESULTS / "scaling-cpu-quick.json").read_text())
    kept = [p for p in saved["points"] if p["line"] != "random/CartPole-v1"]
    out = tmp_path / "scaling.json"
    out.write_text(json.dumps({**saved, "points": kept}))
    (tmp_path / "scaling.png").write_text("the plot of the lines kept")  # redrawn with the new line, unasked
    proc = run_benchmark("scaling.py", "--quick", "--only", "random/CartPole-v1", "--sweep", "envs",
                         "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = json.loads(out.read_text())["points"]
    added = [p for p in points if p["line"] == "random/CartPole-v1"]
    assert [p["num_envs_per_seed"] for p in added] == saved["settings"]["num_envs_grid"]
    assert all(p["sps"] > 0 for p in added)
    strip = lambda p: {k: v for k, v in p.items() if k not in ("random_sps", "fraction_of_random")}  # new ceiling
    assert sorted(map(json.dumps, map(strip, kept))) == sorted(
        json.dumps(strip(p)) for p in points if p["line"] != "random/CartPole-v1")
    assert (tmp_path / "scaling.png").read_bytes().startswith(b"\x89PNG")


def test_grpo_vs_ppo_adds_a_row_and_keeps_the_others(tmp_path):
    saved = json.loads((RESULTS / "grpo_vs_ppo-cpu.json").read_text())
    kept = [r for r in saved["runs"] if r["name"] != "cartpole-ppo"]
    out = tmp_path / "grpo_vs_ppo.json"
    out.write_text(json.dumps({**saved, "quick": True, "runs": kept}))  # a quick run adds only to a quick run's rows
    (tmp_path / "grpo_vs_ppo.md").write_text("the table of the rows kept")  # redrawn with the new row, unasked
    proc = run_benchmark("grpo_vs_ppo.py", "--quick", "--only", "cartpole-ppo", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    assert runs[:-1] == kept
    assert runs[-1]["name"] == "cartpole-ppo" and runs[-1]["num_seeds"] == 2
    assert "| CartPole-v1 (≥ 495) | PPO:" in (tmp_path / "grpo_vs_ppo.md").read_text()


def test_throughput_benchmark_runs_purejaxrls_cartpole_config():
    """benchmarks/throughput.py compares with PureJaxRL's figures, so it must run PureJaxRL's config.

    The values of PureJaxRL's ppo.py CartPole config (commit 146b4856), typed in by hand;
    its loss clips the value update to +-CLIP_EPS, so ``clip_value_loss`` is on.
    """
    base = load_benchmark("throughput.py").BASE
    purejaxrl = dict(
        env="CartPole-v1", num_envs=4, num_steps=128, total_timesteps=500_000, update_epochs=4,
        num_minibatches=4, lr=2.5e-4, anneal_lr=True, gamma=0.99, gae_lambda=0.95, clip_eps=0.2,
        ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, hidden_sizes=(64, 64), activation="tanh",
        clip_value_loss=True, norm_adv=True,
    )
    assert {name: getattr(base, name) for name in purejaxrl} == purejaxrl
    assert not uses_obs_normalization(base, discrete=True)
    assert not base.normalize_reward  # None: off for discrete actions, as in PureJaxRL's CartPole


def test_throughput_case_labels_state_the_budget_run():
    """A case's label, its key in the JSON, states the budget it runs: a tenth of it with --quick. The committed
    results were labelled before every label carried its budget: each key is the start of today's full label."""
    throughput = load_benchmark("throughput.py")
    full = ["1 seed, 4 envs x 128, 5e5 steps", "16 seeds vmapped, 4 envs x 128, 5e5 steps each",
            "16 seeds vmapped, 4 envs x 128, 1 device, 5e5 steps each", "1 seed, 2048 envs x 128, 1e7 steps"]
    for quick, labels in ((False, full), (True, [label.replace("5e5", "5e4").replace("1e7", "1e6") for label in full])):
        runs = [(throughput.run_config(config, quick), seeds, devices) for config, seeds, devices in throughput.CASES]
        assert [throughput.case_label(*run) for run in runs] == labels
        cut = 10 if quick else 1
        assert [config.total_timesteps for config, _, _ in runs] == [500_000 // cut] * 3 + [10_000_000 // cut]
    for saved in ("throughput-cpu.json", "throughput-cpu-zen1.json"):
        cases = json.loads((RESULTS / saved).read_text())["cases"]
        assert len(cases) == len(full) and all(label.startswith(key) for key, label in zip(cases, full)), cases.keys()
        assert [row["total_timesteps_per_seed"] for row in cases.values()] == [500_000] * 3 + [10_000_000]


def test_throughput_benchmark_writes_a_row_per_case(tmp_path, monkeypatch, capsys):
    """``main --quick`` end to end on one tiny case (2 vmapped seeds, laid out as the CLI lays them out):
    every figure the README's table takes from the JSON is there and positive, and the row's label states
    the budget the quick run ran (a tenth of the case's). A case laid out as one before it (as "1 device" is
    on one GPU) is not run again."""
    throughput = load_benchmark("throughput.py")
    tiny = throughput.BASE.replace(num_envs=4, num_steps=16, num_minibatches=2, total_timesteps=4 * 16 * 30)
    devices = min(2, jax.device_count())
    monkeypatch.setattr(throughput, "CASES", ((tiny, 2, None), (tiny, 2, devices)))
    dense_rate = throughput.dense_flop_rate
    monkeypatch.setattr(throughput, "dense_flop_rate", lambda: dense_rate(batch=64, iters=10))
    out = tmp_path / "new" / "throughput.json"  # a directory that does not exist is made when the results are written
    monkeypatch.setattr(sys, "argv", ["throughput.py", "--out", str(out), "--quick"])
    throughput.main()

    record = json.loads(out.read_text())
    assert list(record["cases"]) == ["2 seeds vmapped, 4 envs x 16, 192 steps each"]
    row = record["cases"]["2 seeds vmapped, 4 envs x 16, 192 steps each"]
    assert row["total_timesteps_per_seed"] == 4 * 16 * 3
    assert row["num_seeds"] == 2 and row["env_steps"] == 2 * 3 * 64
    assert row["devices"] == devices
    for figure in (row["compile_s"], row["run_s"], row["sps"], row["rollout_only"]["sps"],
                   row["fraction_of_rollout_only"], row["fraction_of_dense_flop_rate"], record["dense64_flops_per_s"]):
        assert figure > 0
    assert {"platform", "jax", "date"} <= record["machine"].keys()
    printed = capsys.readouterr().out
    assert "2 seeds vmapped, 4 envs x 16, 192 steps each" in printed and f"wrote {out}" in printed
    repeat = f"2 seeds vmapped, 4 envs x 16, {devices} device{'s' * (devices > 1)}, 192 steps each"
    assert "the same run as '2 seeds vmapped, 4 envs x 16, 192 steps each' here: not repeated" in printed
    assert repeat in printed and repeat not in record["cases"]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args, message", [
    (["--no-such-flag"], "error: unrecognized arguments: --no-such-flag"),
    (["--overwrite=yes"], "error: --overwrite: ignored explicit argument 'yes'"),
])
def test_benchmark_flag_errors_are_one_line(monkeypatch, capsys, script, args, message):
    assert refusal(script, args, monkeypatch, capsys) == message + "\n"


@pytest.mark.parametrize("script", OUT_SCRIPTS)
@pytest.mark.parametrize("name", ["clash.png", "clash.md", "clash"])
def test_benchmark_out_must_be_a_json_file(tmp_path, monkeypatch, capsys, script, name):
    """The plot and table written beside --out take its name with another suffix, so --out is a .json file:
    ``--out clash.png`` would have been the JSON and the plot at once, and kept only the plot."""
    out = tmp_path / "new" / name
    err = refusal(script, ["--out", str(out), "--overwrite"], monkeypatch, capsys)
    assert f"error: --out: must name a .json file, got {out}" in err, err
    assert not out.parent.exists()  # a refused run makes no directory


@pytest.mark.parametrize("script, suffix, what", [("scaling.py", ".png", "plot"), ("grpo_vs_ppo.py", ".md", "table")])
def test_benchmark_refuses_to_replace_a_file_beside_out(tmp_path, monkeypatch, capsys, script, suffix, what):
    """A new --out's plot or table would replace a file already there: the user's, since no results are beside it."""
    mine = tmp_path / f"mine{suffix}"
    mine.write_text("x")
    err = refusal(script, ["--out", str(tmp_path / "mine.json"), "--quick"], monkeypatch, capsys)
    assert f"error: --out: {mine} already holds a file this run would replace with its {what}. Pass --overwrite" in err
    assert mine.read_text() == "x"
    mine.unlink()
    mine.mkdir()  # a directory cannot be replaced, --overwrite or not
    err = refusal(script, ["--out", str(tmp_path / "mine.json"), "--quick", "--overwrite"], monkeypatch, capsys)
    assert f"error: --out: {mine}, where this run writes its {what}, is a directory" in err, err


@pytest.mark.parametrize("script", OUT_SCRIPTS)
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_benchmark_out_must_be_a_file_in_a_directory(tmp_path, monkeypatch, capsys, script, overwrite):
    err = refusal(script, ["--out", str(tmp_path), "--quick", *overwrite], monkeypatch, capsys)
    assert f"error: --out: {tmp_path} is a directory; name a .json file in it" in err, err
    notes = tmp_path / "notes"
    notes.write_text("a file, not a directory")
    out = notes / "sub" / "results.json"
    err = refusal(script, ["--out", str(out), "--quick", *overwrite], monkeypatch, capsys)
    assert f"error: --out: cannot write {out}: {notes} is not a directory" in err, err


def test_results_out_dir_must_be_a_directory(tmp_path, monkeypatch, capsys):
    notes = tmp_path / "notes"
    notes.write_text("a file, not a directory")
    err = refusal("results.py", ["--presets", "cartpole-ppo", "--out-dir", str(notes)], monkeypatch, capsys)
    assert f"error: --out-dir: {notes} is not a directory" in err, err
    err = refusal("results.py", ["--presets", "cartpole-ppo", "--out-dir", str(notes / "suite")], monkeypatch, capsys)
    assert f"error: --out-dir: cannot write {notes / 'suite'}: {notes} is not a directory" in err, err
    err = refusal("results.py", ["--report-only", "--out-dir", str(tmp_path / "none")], monkeypatch, capsys)
    assert f"error: --out-dir: {tmp_path / 'none'} does not exist: there is no table to redraw" in err, err
    assert notes.read_text() == "a file, not a directory" and not (tmp_path / "none").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_output_that_cannot_be_written_is_refused(tmp_path, monkeypatch, capsys, script):
    """A directory this user cannot write (tested through os.access: the suite may run as root) is refused
    before any work, not after it; the nearest existing parent is what is checked, as a missing one is made."""
    locked = tmp_path / "locked"
    locked.mkdir()
    deny_writing(monkeypatch, locked)
    flag, target = ("--out-dir", locked / "suite") if script == "results.py" else ("--out", locked / "sub" / "r.json")
    extra = ["--presets", "cartpole-ppo"] if script == "results.py" else ["--quick"]
    err = refusal(script, [*extra, flag, str(target)], monkeypatch, capsys)
    assert f"error: {flag}: cannot write {target}: {locked} is not writable (permission denied)" in err, err
    assert list(locked.iterdir()) == []


def test_results_checks_the_out_dir_itself_where_it_exists(tmp_path, monkeypatch, capsys):
    """An existing --out-dir is what must be writable, not its parent: a locked one is refused (it used to train,
    then fail to write), and a writable one inside a locked parent is used (it used to be refused)."""
    locked, parent = tmp_path / "suite", tmp_path / "shared"
    (parent / "suite").mkdir(parents=True)
    locked.mkdir()
    deny_writing(monkeypatch, locked, parent)
    err = refusal("results.py", ["--presets", "cartpole-ppo", "--out-dir", str(locked)], monkeypatch, capsys)
    assert f"error: --out-dir: cannot write {locked}: {locked} is not writable (permission denied)" in err, err
    module = load_benchmark("results.py")

    def run_preset(*args):
        raise Started(args)

    monkeypatch.setattr(module, "run_preset", run_preset)
    with pytest.raises(Started):
        run_main(module, ["--presets", "cartpole-ppo", "--out-dir", str(parent / "suite")], monkeypatch)


def write_cut_short(self, text, *args, **kwargs):
    """Path.write_text as a full disk does it: half the text written, then an error."""
    with open(self, "w") as file:
        file.write(text[: len(text) // 2])
    raise OSError(28, "No space left on device")


def test_saved_results_stay_whole_when_writing_fails(tmp_path, monkeypatch):
    """Results files gather rows over many runs: a write cut short (a full disk, a kill) must leave the old file
    as it was, not half of the new one; a measured NaN is written as such."""
    load_benchmark("throughput.py")  # puts benchmarks/ on sys.path
    from benchmark_cli import save_results

    out = tmp_path / "results.json"
    save_results(out, {"rows": [1, 2], "ratio": float("nan")})
    saved = out.read_text()
    assert json.loads(saved)["rows"] == [1, 2] and "NaN" in saved

    monkeypatch.setattr(Path, "write_text", write_cut_short)
    with pytest.raises(OSError):
        save_results(out, {"rows": [1, 2, 3]})
    assert out.read_text() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no half file beside it


def test_saved_results_keep_the_mode_of_the_file_they_replace_and_never_write_through_a_link(tmp_path):
    """A results file made readable by a group stays so (it came back with the umask's mode); one made
    read-only stays readable, and writable by its owner, as before. A link is replaced, and the file it
    points to (in a shared or content-addressed store, perhaps) is left as it was."""
    load_benchmark("throughput.py")
    from benchmark_cli import save_results

    out = tmp_path / "results.json"
    for mode, kept in ((0o640, 0o640), (0o444, 0o644)):
        save_results(out, {"rows": [1]})
        out.chmod(mode)
        save_results(out, {"rows": [1, 2]})
        assert json.loads(out.read_text())["rows"] == [1, 2] and stat.S_IMODE(out.stat().st_mode) == kept
    store = tmp_path / "store" / "results.json"
    store.parent.mkdir()
    store.write_text("the stored file")
    out.unlink()
    out.symlink_to(store)
    save_results(out, {"rows": [3]})
    assert not out.is_symlink() and json.loads(out.read_text())["rows"] == [3]
    assert store.read_text() == "the stored file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "store"]  # no temp file left beside it


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_stops_a_benchmark_with_one_line_and_keeps_its_results(tmp_path, monkeypatch, capsys, script):
    """Ctrl-C in a benchmark's work: ``interrupted (Ctrl-C)`` on one line and exit code 130, as the CLIs
    (a traceback before), and the results it was to replace, even with --overwrite, stay as they were."""
    import signal

    from conftest import run_handler

    module = load_benchmark(script)
    if script == "results.py":
        (tmp_path / "suite").mkdir()
        held = tmp_path / "suite" / "table.md"
        argv = ["--presets", "cartpole-ppo", "--out-dir", str(tmp_path / "suite"), "--overwrite"]
    else:
        held = tmp_path / "results.json"
        argv = ["--out", str(held), "--quick", "--overwrite"]
    held.write_text("the user's results")
    monkeypatch.setattr(module, WORK[script][0], lambda *a, **k: run_handler(signal.SIGINT))
    monkeypatch.setattr(sys, "argv", [script, *argv])
    try:
        code = module.run_stoppable(module.main)
    except KeyboardInterrupt:
        pytest.fail(f"the Ctrl-C came out of {script} as a traceback")
    assert code == 130 and capsys.readouterr().err.strip() == "interrupted (Ctrl-C)"
    assert held.read_text() == "the user's results"
    assert sorted(p.name for p in held.parent.iterdir()) == [held.name]


def test_a_benchmark_stopped_while_it_trains_exits_130_without_writing(tmp_path):
    """A real SIGINT once memory.py's job has logged its first update: the job stops after a segment (saving
    a checkpoint), and the script exits 130 with one line and no results file (its figures would be those of
    a part of the job). It used to write them, exit code 0."""
    import signal

    out, run_dir = tmp_path / "memory.json", tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(BENCHMARKS / "memory.py"), "--updates", "1000000", "--out", str(out),
                             "--run-dir", str(run_dir)], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "metrics.csv").exists() or len((run_dir / "metrics.csv").read_text().splitlines()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.strip() == f"interrupted (Ctrl-C); {out} was not written" and not out.exists()
    assert (run_dir / "checkpoints").is_dir()


def test_results_table_stays_whole_when_writing_fails(tmp_path, monkeypatch):
    """results.py redraws table.md from the records; a write cut short keeps the previous table whole."""
    results = load_benchmark("results.py")
    shutil.copy(RESULTS / "suite-cpu" / "acrobot-ppo.json", tmp_path)
    table = results.report(tmp_path)
    assert (tmp_path / "table.md").read_text() == table and "Acrobot-v1" in table

    monkeypatch.setattr(Path, "write_text", write_cut_short)
    with pytest.raises(OSError):
        results.report(tmp_path)
    assert (tmp_path / "table.md").read_text() == table
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("script", OUT_SCRIPTS)
def test_benchmark_out_that_is_read_only_is_refused_even_with_overwrite(tmp_path, monkeypatch, capsys, script):
    """Results are written by renaming a new file over the old one, which a read-only file does not stop."""
    out = tmp_path / "kept.json"
    out.write_text("{}")
    deny_writing(monkeypatch, out)
    err = refusal(script, ["--out", str(out), "--quick", "--overwrite"], monkeypatch, capsys)
    assert f"error: --out: {out} is read-only; make it writable or name another file" in err, err
    assert out.read_text() == "{}"


def test_scaling_plot_only_reads_results_that_are_read_only(tmp_path, monkeypatch):
    """--plot-only writes the plot beside --out, not the results: a read-only results file is plotted."""
    out = tmp_path / "scaling.json"
    shutil.copy(RESULTS / "scaling-cpu-quick.json", out)
    deny_writing(monkeypatch, out)
    module = load_benchmark("scaling.py")

    def plot(*args):
        raise Started(args)

    monkeypatch.setattr(module, "plot", plot)
    with pytest.raises(Started):
        run_main(module, ["--plot-only", "--out", str(out)], monkeypatch)


def test_results_refuses_a_json_that_is_not_a_record_before_training(tmp_path, monkeypatch, capsys):
    """The table is drawn from every JSON in --out-dir after training: one that is not a preset record is found
    before the work. A file the run writes anew (a preset's own record, with --overwrite) is not read."""
    out_dir = tmp_path / "suite"
    out_dir.mkdir()
    notes = out_dir / "notes.json"
    notes.write_text('{"mine": true}')
    err = refusal("results.py", ["--presets", "cartpole-ppo", "--out-dir", str(out_dir)], monkeypatch, capsys)
    assert f"error: --out-dir: {notes} is not a preset record of this script; move it elsewhere" in err, err
    err = refusal("results.py", ["--report-only", "--out-dir", str(out_dir)], monkeypatch, capsys)
    assert f"{notes} is not a preset record" in err, err
    notes.rename(out_dir / "cartpole-ppo.json")
    module = load_benchmark("results.py")

    def run_preset(*args):
        raise Started(args)

    monkeypatch.setattr(module, "run_preset", run_preset)
    with pytest.raises(Started):
        run_main(module, ["--presets", "cartpole-ppo", "--out-dir", str(out_dir), "--overwrite"], monkeypatch)


def test_scaling_grid_stops_at_the_cpu_sizes_unless_raised(tmp_path, monkeypatch):
    """The GPU-sized points (65536 and 262144 envs, 1024 and 4096 seeds) are planned only when the limits are raised."""
    module = load_benchmark("scaling.py")
    real_plan = module.plan

    def plan(*args):
        raise Started(real_plan(*args))

    monkeypatch.setattr(module, "plan", plan)
    for raised, envs, seeds in (([], 16384, 256),
                                (["--max-envs", "262144", "--max-seeds", "4096", "--max-total-envs", "262144"],
                                 262144, 4096)):
        with pytest.raises(Started) as started:
            run_main(module, ["--only", "random/CartPole", "--out", str(tmp_path / "s.json"), *raised], monkeypatch)
        todo = started.value.args[0]
        assert max(p["num_envs_per_seed"] for p in todo if p["sweep"] == "num_envs") == envs
        assert max(p["num_seeds"] for p in todo if p["sweep"] == "seeds") == seeds


@pytest.mark.parametrize("num_envs", [64, 65536, 262144])
def test_scaling_grpo_budget_leaves_room_for_the_last_update(num_envs):
    """GRPO's budget plus one update's most alive steps fits the int32 step count at every grid size (262144
    Breakout envs x 1000 steps overflowed it, and the run stopped with a ConfigError)."""
    module = load_benchmark("scaling.py")
    for env in module.ENVS:
        config = module.make_config("grpo", env, num_envs, None)
        config.validate()
        assert config.total_timesteps + config.most_steps_per_update() <= 2**31 - 1
        assert config.total_timesteps > 10**9  # still far beyond what a point runs


def test_scaling_skips_a_point_that_runs_out_of_device_memory_while_compiling(monkeypatch):
    """XLA's GPU autotuner runs candidate kernels while compiling; running out of memory there skips the point
    (as the memory estimate does after compiling) instead of ending the whole grid. Other errors still raise."""
    module = load_benchmark("scaling.py")
    config = module.make_config("ppo", "CartPole-v1", 64, None)

    def compile_job(*args, message):
        raise jax.errors.JaxRuntimeError(message)

    monkeypatch.setattr(module, "compile_job", functools.partial(
        compile_job, message="NOT_FOUND: All configs failed during profiling.\nEXECUTION FAILED: RESOURCE_EXHAUSTED: "
                             "Out of memory while trying to allocate 31.27GiB with allocator GPU_0_bfc"))
    point = module.train_point(config, 1, budget_s=0.1)
    assert point["skipped"] == ("out of device memory while compiling (XLA: Out of memory while trying to allocate "
                                "31.27GiB with allocator GPU_0_bfc)")
    assert point["compile_s"] is None
    monkeypatch.setattr(module, "compile_job", functools.partial(compile_job, message="INTERNAL: something else"))
    with pytest.raises(jax.errors.JaxRuntimeError, match="something else"):
        module.train_point(config, 1, budget_s=0.1)


def test_scaling_plot_only_refuses_a_file_it_cannot_read(tmp_path, monkeypatch, capsys):
    out = tmp_path / "notes.json"
    out.write_text("my notes, not JSON")
    err = refusal("scaling.py", ["--plot-only", "--out", str(out)], monkeypatch, capsys)
    assert f"error: --out: {out} holds {NOT_RESULTS}: nothing to plot" in err, err
    assert not out.with_suffix(".png").exists()


@pytest.mark.parametrize("script, args", [
    ("throughput.py", ["--cpu-devices", "1e0"]),
    ("memory.py", ["--updates", "1e3", "--num-seeds", "1.0"]),
    ("grpo_vs_ppo.py", ["--ablation-seeds", "4e0"]),
    ("scaling.py", ["--max-envs", "2.56e2", "--max-seeds", "4e0", "--max-total-envs", "1e3", "--envs-per-seed", "64.0",
                    "--grpo-horizon", "1e2"]),
])
def test_benchmark_integer_flags_take_whole_floats(tmp_path, monkeypatch, capsys, script, args):
    """Every integer flag takes ``5e5`` as the CLI does; the refusal that follows shows the flags were taken."""
    out = tmp_path / "notes.json"
    out.write_text("my notes, not JSON")
    err = refusal(script, ["--out", str(out), *args], monkeypatch, capsys)
    assert f"error: --out: {out} already holds {NOT_RESULTS}" in err, err


def test_results_integer_flags_take_whole_floats(tmp_path, monkeypatch, capsys):
    (tmp_path / "cartpole-ppo.json").write_text("{}")
    err = refusal("results.py", ["--presets", "cartpole-ppo", "--num-seeds", "2e0", "--eval-episodes", "4.0",
                                 "--max-steps", "4.096e3", "--cpu-devices", "1e0", "--out-dir", str(tmp_path)],
                  monkeypatch, capsys)
    assert f"error: --out-dir: {tmp_path} already holds cartpole-ppo.json. Pass --overwrite" in err, err


@pytest.mark.parametrize("script, args", [
    ("throughput.py", ["--out"]), ("memory.py", ["--out"]), ("memory.py", ["--run-dir"]), ("grpo_vs_ppo.py", ["--out"]),
    ("scaling.py", ["--out"]), ("scaling.py", ["--plot-only", "--out"]), ("results.py", ["--out-dir"]),
    ("results.py", ["--presets", "cartpole-ppo", "--from-run"]),
])
def test_benchmark_refuses_an_empty_path(monkeypatch, capsys, script, args):
    """An empty path is a mistake (an unset variable), not the default path."""
    err = refusal(script, [*args, ""], monkeypatch, capsys)
    assert f"error: {args[-1]}: must name a path, got ''" in err, err


@pytest.mark.parametrize("args, updates", [
    (["--quick", "--updates", "5e1"], 50), (["--quick"], 1_000), ([], 10_000), (["--updates", "7"], 7)])
def test_memory_runs_the_updates_asked_for(tmp_path, monkeypatch, args, updates):
    """--quick sets the default number of updates; --updates beside it wins (it used to be ignored)."""
    memory = load_benchmark("memory.py")

    def train_job(job, console):
        raise Started(job.config)

    monkeypatch.setattr(memory, "train_job", train_job)
    with pytest.raises(Started) as started:
        run_main(memory, ["--out", str(tmp_path / "memory.json"), *args], monkeypatch)
    assert started.value.args[0].num_updates == updates


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS is read from /proc (Linux)")
def test_memory_runs_end_to_end_and_its_peak_covers_the_whole_job(tmp_path):
    """A short run through the CLI's host loop: every segment sampled, the updates asked for, and the peak RSS is
    the process's (it was the last segment's, below the RSS after the checkpoint saved at the end)."""
    out = tmp_path / "memory.json"
    proc = run_benchmark("memory.py", "--updates", "20", "--out", str(out), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["exit_code"] == 0 and result["updates"] == 20 and result["samples"][-1]["update"] == 20
    assert result["rss_peak_bytes"] >= max(result["rss_after_job_bytes"], *(s["rss_bytes"] for s in result["samples"]))


@pytest.mark.parametrize("args, seeds", [
    (["--quick", "--only", "cartpole-grpo-rtg", "--ablation-seeds", "3"], [("cartpole-grpo-rtg", 3)]),
    (["--quick", "--only", "cartpole-grpo-rtg"], [("cartpole-grpo-rtg", 2)]),
    (["--quick", "--only", "acrobot-ppo", "--ablation-seeds", "3"], [("acrobot-ppo", 2)]),  # a main row
    (["--only", "acrobot-grpo-small"], [("acrobot-grpo-small", 8)]),
])
def test_grpo_vs_ppo_runs_the_seeds_asked_for(tmp_path, monkeypatch, capsys, args, seeds):
    """--quick sets the default seeds; --ablation-seeds beside it wins for the ablation rows (it used to be ignored)."""
    grpo_vs_ppo = load_benchmark("grpo_vs_ppo.py")
    calls = fake_grpo_vs_ppo_runs(grpo_vs_ppo, monkeypatch)
    out = tmp_path / "grpo_vs_ppo.json"
    run_main(grpo_vs_ppo, ["--out", str(out), *args], monkeypatch)
    assert calls == seeds
    record = json.loads(out.read_text())
    assert [r["num_seeds"] for r in record["runs"]] == [n for _, n in seeds]
    if "--ablation-seeds" in args:
        assert record["seeds_ablation"] == 3


def test_grpo_vs_ppo_never_mixes_quick_and_full_rows(tmp_path, monkeypatch, capsys):
    """A quick run given --overwrite replaces a full run's file whole, as scaling.py does: it used to keep the
    full rows beside its quick one and label them all quick."""
    out = tmp_path / "grpo_vs_ppo.json"
    shutil.copy(RESULTS / "grpo_vs_ppo-cpu.json", out)
    grpo_vs_ppo = load_benchmark("grpo_vs_ppo.py")
    fake_grpo_vs_ppo_runs(grpo_vs_ppo, monkeypatch)
    run_main(grpo_vs_ppo, ["--out", str(out), "--quick", "--only", "cartpole-ppo", "--overwrite"], monkeypatch)
    record = json.loads(out.read_text())
    assert record["quick"] is True and [r["name"] for r in record["runs"]] == ["cartpole-ppo"]
    assert record["total_wall_s"] < 60  # this run's time alone, not the full run's 26 min added


def test_results_from_run_refusal_names_the_run_once_and_makes_no_directory(tmp_path, monkeypatch, capsys):
    run, out_dir = tmp_path / "nope", tmp_path / "suite"
    err = refusal("results.py", ["--presets", "cartpole-ppo", "--from-run", str(run), "--out-dir", str(out_dir)],
                  monkeypatch, capsys)
    assert f"error: --from-run: {run} is not a run directory" in err and f"{run}: {run}" not in err, err
    assert not out_dir.exists()


def test_results_record_treats_a_stopped_seed_as_summary_json_does():
    """A seed stopped on non-finite values has no final return and no final policy, as in summary.json, and
    does not cut the curve's step grid short (it once bounded the whole figure by its one update)."""
    import numpy as np

    from jaxrl_po import make_train
    from jaxrl_po.presets import PRESETS
    from jaxrl_po.runner import TrainedRuns

    results = load_benchmark("results.py")
    config = PRESETS["cartpole-ppo"].config.replace(total_timesteps=4096, num_envs=32, num_steps=16)
    keys = jax.vmap(jax.random.key)(np.arange(3, dtype=np.uint32))
    hparams = {"lr": np.array([2e-3, 2e-3, 1e30], np.float32)}  # seed 2 diverges at its first update
    out = jax.jit(jax.vmap(make_train(config)))(keys, hparams)
    trained = TrainedRuns("ppo", config, [0, 1, 2], [{}] * 3, out.state, 8, out.metrics)
    record = results.make_record("cartpole-ppo", trained, 1, {"wall_s": 1.0, "compile_s": 0.5, "run_s": 0.5}, 2)
    assert record["nonfinite_runs"] == 1 and record["stopped_per_seed"] == [False, False, True]
    finals = record["final_return_per_seed"]
    assert finals[2] is None and None not in finals[:2]
    assert record["final_return_mean"] == np.mean(finals[:2])
    for mode in ("greedy", "stochastic"):
        per_seed = record["final_policy"][mode]["per_seed"]
        assert per_seed[2] is None and None not in per_seed[:2]
        assert record["final_policy"][mode]["mean"] == pytest.approx(np.mean(per_seed[:2]))  # seed 2 left out
    curve = results.curve_of(record)
    assert curve.env_steps[-1] == 4096 and curve.num_stopped == 1
