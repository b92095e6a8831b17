"""The benchmark scripts never replace saved results unasked.

A full benchmark run takes minutes to hours, and the committed results are
what the README cites, so a rerun that would replace any of them is refused
before any work unless ``--overwrite`` is given. Adding rows or lines to a
file (``--only``) is allowed and keeps everything already there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_env

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCHMARKS / "results"


def run_benchmark(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(proc: subprocess.CompletedProcess, out: Path, held: str, saved: str) -> None:
    """Exit 2 with one clear error naming --out and what it holds, and the file untouched."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"error: --out: {out} already holds {held}" in proc.stderr, proc.stderr
    assert "Pass --overwrite to replace" in proc.stderr
    assert out.read_text() == saved


@pytest.mark.parametrize("script, saved, args, held", [
    ("throughput.py", "throughput-cpu-zen1.json", [], "a run of 4 cases (made 2026-11-23)"),
    ("memory.py", "memory-cpu.json", ["--quick"], "a run of 10,000 updates (made 2026-11-22)"),
    ("grpo_vs_ppo.py", "grpo_vs_ppo-cpu.json", ["--only", "acrobot-grpo-rtg"], "the row acrobot-grpo-rtg"),
    ("grpo_vs_ppo.py", "grpo_vs_ppo-cpu.json", ["--only", "pendulum"],
     "the rows pendulum-ppo, pendulum-grpo, pendulum-grpo-rtg, pendulum-grpo-small-rtg"),
    ("scaling.py", "scaling-cpu.json", ["--only", "grpo/CartPole"],
     "the lines grpo/CartPole-v1 (num_envs sweep), grpo/CartPole-v1 (seeds sweep), random/CartPole-v1 (num_envs "
     "sweep), random/CartPole-v1 (seeds sweep) (made 2026-11-22)"),  # a line re-runs its env's random ceiling
    ("scaling.py", "scaling-cpu.json", ["--quick"], "a full run (made 2026-11-22)"),  # a quick run would drop it all
])
def test_benchmark_refuses_to_replace_saved_results(tmp_path, script, saved, args, held):
    out = tmp_path / saved
    shutil.copy(RESULTS / saved, out)
    assert_refused(run_benchmark(script, "--out", str(out), *args), out, held, (RESULTS / saved).read_text())


@pytest.mark.parametrize("script", ["throughput.py", "memory.py", "grpo_vs_ppo.py", "scaling.py"])
def test_benchmark_refuses_to_replace_a_file_it_cannot_read(tmp_path, script):
    out = tmp_path / "notes.json"
    out.write_text("my notes, not JSON")
    proc = run_benchmark(script, "--out", str(out), "--quick")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"error: --out: {out} already holds" in proc.stderr and "(date unknown)" in proc.stderr
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
