"""The benchmark scripts: they never replace saved results unasked, and the throughput one runs PureJaxRL's config.

A full benchmark run takes minutes to hours, and the committed results are
what the README cites, so a rerun that would replace any of them is refused
before any work unless ``--overwrite`` is given. Adding rows or lines to a
file (``--only``) is allowed and keeps everything already there.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxrl_po.logs import NOT_RESULTS
from jaxrl_po.ppo import uses_obs_normalization

from conftest import cli_env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCHMARKS / "results"


def run_benchmark(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def load_benchmark(script: str):
    """The benchmark script as a module, in this process (its ``main`` reads ``sys.argv``)."""
    jax.devices()  # the backend is up: importing a script cannot change this process's devices
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def refusal(script: str, argv: list[str], monkeypatch, capsys) -> str:
    """The one-line error ``script`` exits 2 with (in this process: the refusal comes before any work)."""
    main = load_benchmark(script).main
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1, err
    return err


@pytest.mark.parametrize("script, saved, args, held", [
    ("throughput.py", "throughput-cpu-zen1.json", [], "a run of 4 cases (made 2026-11-23)"),
    ("memory.py", "memory-cpu.json", ["--quick"], "a run of 10,000 updates (made 2026-11-22)"),
    ("grpo_vs_ppo.py", "grpo_vs_ppo-cpu.json", ["--only", "acrobot-grpo-rtg"],
     "the row acrobot-grpo-rtg (date unknown)"),  # written before records carried their date
    ("grpo_vs_ppo.py", "grpo_vs_ppo-cpu.json", ["--only", "pendulum"],
     "the rows pendulum-ppo, pendulum-grpo, pendulum-grpo-rtg, pendulum-grpo-small-rtg (date unknown)"),
    ("scaling.py", "scaling-cpu.json", ["--only", "grpo/CartPole"],
     "the lines grpo/CartPole-v1 (num_envs sweep), grpo/CartPole-v1 (seeds sweep), random/CartPole-v1 (num_envs "
     "sweep), random/CartPole-v1 (seeds sweep) (made 2026-11-22)"),  # a line re-runs its env's random ceiling
    ("scaling.py", "scaling-cpu.json", ["--quick"], "a full run (made 2026-11-22)"),  # a quick run would drop it all
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
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_grpo_vs_ppo_adds_a_row_and_keeps_the_others(tmp_path):
    saved = json.loads((RESULTS / "grpo_vs_ppo-cpu.json").read_text())
    kept = [r for r in saved["runs"] if r["name"] != "cartpole-ppo"]
    out = tmp_path / "grpo_vs_ppo.json"
    out.write_text(json.dumps({**saved, "runs": kept}))
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


def test_throughput_benchmark_writes_a_row_per_case(tmp_path, monkeypatch, capsys):
    """``main`` end to end on one tiny case (2 vmapped seeds, laid out as the CLI lays them out):
    every figure the README's table takes from the JSON is there and positive."""
    throughput = load_benchmark("throughput.py")
    tiny = throughput.BASE.replace(num_envs=4, num_steps=16, num_minibatches=2, total_timesteps=4 * 16 * 3)
    monkeypatch.setattr(throughput, "CASES", {"2 seeds, 4 envs x 16": (tiny, 2, None)})
    dense_rate = throughput.dense_flop_rate
    monkeypatch.setattr(throughput, "dense_flop_rate", lambda: dense_rate(batch=64, iters=10))
    out = tmp_path / "throughput.json"
    monkeypatch.setattr(sys, "argv", ["throughput.py", "--out", str(out)])
    throughput.main()

    record = json.loads(out.read_text())
    row = record["cases"]["2 seeds, 4 envs x 16"]
    assert row["num_seeds"] == 2 and row["env_steps"] == 2 * 3 * 64
    assert row["devices"] == min(2, jax.device_count())
    for figure in (row["compile_s"], row["run_s"], row["sps"], row["rollout_only"]["sps"],
                   row["fraction_of_rollout_only"], row["fraction_of_dense_flop_rate"], record["dense64_flops_per_s"]):
        assert figure > 0
    assert {"platform", "jax", "date"} <= record["machine"].keys()
    printed = capsys.readouterr().out
    assert "2 seeds, 4 envs x 16" in printed and f"wrote {out}" in printed
