"""The CLI across devices and processes: one process with 4 forced CPU devices, and 2 processes x 2 devices.

Both runs train 1 seed on a ("runs" 1, "envs" 4) mesh, so the one agent's env
batch is split over 4 devices. The 2-process run joins through
``--distributed`` on localhost (CPU collectives over gloo). Each run is also
cut back to its first checkpoint and resumed, which must reproduce it exactly.
"""

from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxrl_po.runner import load_trained

from conftest import cli_env

# 16 updates of 8 envs x 16 steps; checkpoints after updates 8 and 16.
FLAGS = [
    "--num-envs", "8", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "2",
    "--total-timesteps", "2048", "--num-seeds", "1", "--hidden-sizes", "16", "--checkpoint-every", "8",
    "--no-progress",
]
TIMEOUT_S = 300


def train(argv: list[str], cwd, processes: int = 1) -> list[subprocess.CompletedProcess]:
    """``python -m jaxrl_po.train *argv`` on 4 CPU devices: 1 process x 4, or 2 processes x 2 (--distributed)."""
    if processes == 1:
        return [subprocess.run([sys.executable, "-m", "jaxrl_po.train", *argv], cwd=cwd, env=cli_env(cpu_devices=4),
                               capture_output=True, text=True, timeout=TIMEOUT_S)]
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    join = ["--distributed", "--coordinator-address", f"localhost:{port}", "--num-processes", str(processes)]
    procs = [subprocess.Popen([sys.executable, "-m", "jaxrl_po.train", *argv, *join, "--process-id", str(i)],
                              cwd=cwd, env=cli_env(cpu_devices=4 // processes), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i in range(processes)]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            out, err = proc.communicate()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def train_and_resume(base, name: str, processes: int) -> dict:
    """Train, keep metrics.csv, drop the last checkpoint, resume from the one after update 8."""
    run_dir = base / name
    argv = [*FLAGS, "--run-dir", str(run_dir), "--compile-cache-dir", str(base / f"xla-{name}")]
    first = train(argv, base, processes)
    for proc in first:
        assert proc.returncode == 0, proc.stderr[-4000:]
    full_csv = (run_dir / "metrics.csv").read_text()
    shutil.rmtree(run_dir / "checkpoints" / "16")
    resumed = train(["--resume", str(run_dir), "--compile-cache-dir", str(base / f"xla-{name}")], base, processes)
    return {"dir": run_dir, "first": first, "full_csv": full_csv, "resumed": resumed,
            "summary": json.loads((run_dir / "summary.json").read_text())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("devices")
    return {"one": train_and_resume(base, "one", processes=1), "two": train_and_resume(base, "two", processes=2)}


def test_one_process_on_four_devices_splits_the_env_batch_and_resumes_exactly(runs):
    run = runs["one"]
    out = run["first"][0].stdout
    assert "on 4 cpu device(s) (mesh: runs 1 x envs 4)" in " ".join(out.split()), out
    summary = run["summary"]
    assert summary["mesh"] == {"runs": 1, "envs": 4}
    assert summary["num_devices"] == 4 and summary["num_processes"] == 1 and summary["num_updates"] == 16
    resumed = run["resumed"][0]
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout and "checkpoints/8 (update 8)" in resumed.stdout
    assert (run["dir"] / "metrics.csv").read_text() == run["full_csv"]  # bit-exact: same layout, same program


def read_csv(text: str) -> dict[str, np.ndarray]:
    rows = list(csv.reader(text.splitlines()))
    return {name: np.array([float(r[j]) for r in rows[1:]]) for j, name in enumerate(rows[0])}


# gloo (C++) writes "[Gloo] Rank 3 is connected to 3 peer ranks. Expected number of connected peer
# ranks is : 3" in pieces from several threads, so its lines can interleave mid-line.
GLOO_PIECES = ("[Gloo] Rank ", " is connected to ", " peer ranks. Expected number of connected peer ranks is : ")


def words_not_from_gloo(text: str) -> list[str]:
    """The words of ``text`` left after removing gloo's connection messages, however interleaved."""
    for piece in GLOO_PIECES:
        text = text.replace(piece, " ")
    return [word for word in text.split() if not word.isdigit()]


def test_words_not_from_gloo_removes_interleaved_gloo_lines_only():
    interleaved = ("[Gloo] Rank 1 is connected to 1 peer ranks. Expected number of connected peer ranks is : 1\n"
                   "[Gloo] Rank [Gloo] Rank 2 is connected to 3 peer ranks. Expected number of connected peer "
                   "ranks is : 3\n3 is connected to 3 peer ranks. Expected number of connected peer ranks is : 3\n")
    assert words_not_from_gloo(interleaved) == []
    assert words_not_from_gloo(interleaved + "final return 500.0\n") == ["final", "return", "500.0"]


def test_two_processes_match_one_process(runs):
    one, two = runs["one"], runs["two"]
    primary, other = two["first"]
    assert "in 2 processes (mesh: runs 1 x envs 4)" in " ".join(primary.stdout.split()), primary.stdout
    assert "final return" in primary.stdout
    # Only process 0 prints (and writes the run directory).
    assert words_not_from_gloo(other.stdout) == [], other.stdout
    assert two["summary"]["num_processes"] == 2 and two["summary"]["mesh"] == {"runs": 1, "envs": 4}
    a, b = read_csv(one["full_csv"]), read_csv(two["full_csv"])
    for name in ("update", "env_steps", "episodes", "episode_return", "episode_length", "clip_frac"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # the same episodes
    # The cross-process all-reduce (gloo) adds in another order than the in-process one;
    # metrics.csv keeps 6 significant digits.
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "explained_var", "grad_norm"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)
    first, second = load_trained(one["dir"]), load_trained(two["dir"])
    assert first.step == second.step == 16
    for x, y in zip(jax.tree_util.tree_leaves(first.state.params), jax.tree_util.tree_leaves(second.state.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_two_processes_resume_exactly(runs):
    two = runs["two"]
    for proc in two["resumed"]:
        assert proc.returncode == 0, proc.stderr[-4000:]
    assert "checkpoints/8 (update 8)" in two["resumed"][0].stdout
    assert (two["dir"] / "metrics.csv").read_text() == two["full_csv"]


@pytest.mark.parametrize("argv, message", [
    (["--num-envs", "6", "--num-seeds", "1"],
     "error: --num-envs: num_envs = 6 cannot be split evenly over the 4 devices of the env axis"),
    # No coordinator given and no cluster (SLURM, Open MPI, ...) to detect one from.
    (["--distributed"], "error: --distributed: cannot join the job: coordinator_address should be defined"),
])
def test_bad_layouts_and_joins_are_refused_with_one_line(tmp_path, argv, message):
    proc = train([*argv, "--run-dir", str(tmp_path / "run")], tmp_path)[0]
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not (tmp_path / "run").exists()
