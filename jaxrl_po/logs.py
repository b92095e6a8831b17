"""Host-side output: live progress, the run directory files, the final table.

(Named ``logs`` rather than ``logging`` so that running a file of this package
directly can never shadow the standard library's ``logging``.)
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table


class Progress:
    """Receives ``(run_id, update, metrics)`` from the compiled loop and shows a live line.

    Progress is measured in env steps (``metrics.env_steps``, cumulative per
    run), which works for PPO's fixed updates and GRPO's alive-step budget. On a
    terminal the line is redrawn in place; otherwise (CI, pipes) a plain line is
    printed about every 10% of training, so a run is never a silent wait.
    """

    def __init__(self, num_runs: int, steps_per_run: int, stream=None):
        self.num_runs = num_runs
        self.steps_per_run = steps_per_run
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.steps = np.zeros(num_runs, np.int64)
        self.updates = np.zeros(num_runs, np.int64)
        self.latest_return = np.full(num_runs, np.nan)
        self.lock = threading.Lock()
        self.first_report: tuple[float, int] | None = None  # (time, steps): SPS excludes compiling
        self.next_plain_report = 0.1

    def __call__(self, run_id, update, metrics) -> None:
        run = int(run_id)
        steps = int(metrics.env_steps)
        with self.lock:
            # Under vmap a finished run may be stepped again with its result discarded: keep the max.
            if steps <= self.steps[run]:
                return
            self.steps[run] = min(steps, self.steps_per_run)
            self.updates[run] = int(update)
            value = float(metrics.episode_return)
            if not math.isnan(value):
                self.latest_return[run] = value
            self._show()

    def _show(self) -> None:
        total = self.steps_per_run * self.num_runs
        done = int(self.steps.sum())
        fraction = done / total
        now = time.perf_counter()
        if self.first_report is None:
            self.first_report = (now, done)
        elapsed, steps = now - self.first_report[0], done - self.first_report[1]
        sps = steps / elapsed if elapsed > 0 else 0.0
        returns = self.latest_return[~np.isnan(self.latest_return)]
        ret = f"{returns.mean():8.1f}" if returns.size else "     n/a"
        line = (
            f"{fraction:5.0%}  update {int(self.updates.max()):>6}  env steps {done:>13,}  "
            f"SPS {sps:>11,.0f}  mean return {ret}"
        )
        finished = done >= total
        if self.live:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        elif fraction + 1e-9 >= self.next_plain_report or finished:
            self.stream.write(line + "\n")
            self.next_plain_report = math.floor(fraction * 10 + 1) / 10
        self.stream.flush()


def make_run_dir(path: str | os.PathLike) -> Path:
    """Create a fresh run directory; refuse an existing non-empty one or an unwritable place.

    Raises ``OSError``/``FileExistsError`` with a readable message.
    """
    run_dir = Path(path)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise FileExistsError(f"{run_dir} already exists and is not empty; pick another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / ".write-test"
    probe.write_text("")
    probe.unlink()
    return run_dir


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_metrics_csv(path: Path, metrics: Any, seeds: Sequence[int], extra: dict[str, Sequence] | None = None) -> None:
    """One row per update per seed. ``metrics``: NamedTuple of [num_runs, num_updates] arrays with ``env_steps``.

    ``extra`` maps column name -> one value per run (e.g. swept hyperparameters).
    """
    fields = [f for f in metrics._fields if f != "env_steps"]
    arrays = [np.asarray(getattr(metrics, f)) for f in fields]
    env_steps = np.asarray(metrics.env_steps)
    num_runs, num_updates = env_steps.shape
    extra = extra or {}
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seed", *extra, "update", "env_steps", *fields])
        for run in range(num_runs):
            run_extra = [values[run] for values in extra.values()]
            for update in range(num_updates):
                if env_steps[run, update] <= 0:  # a row GRPO's budget never reached
                    continue
                row = [seeds[run], *run_extra, update + 1, int(env_steps[run, update])]
                row += [_csv_number(a[run, update]) for a in arrays]
                writer.writerow(row)
    os.replace(tmp, path)


def _csv_number(x: Any) -> str:
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.6g}"


def final_returns(episode_return: np.ndarray, env_steps: np.ndarray) -> np.ndarray:
    """Per run: mean episode return over the last 10% of its updates (at least one), NaN-aware.

    episode_return, env_steps: [num_runs, num_updates]; rows with env_steps 0 never ran.
    Returns f[num_runs] (NaN where no episode finished in that window).
    """
    out = np.full(episode_return.shape[0], np.nan)
    for run, (returns, steps) in enumerate(zip(episode_return, env_steps)):
        ran = returns[steps > 0]
        tail = ran[-max(1, len(ran) // 10):]
        tail = tail[~np.isnan(tail)]
        if tail.size:
            out[run] = tail.mean()
    return out


def none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def print_summary(
    console: Console, summary: dict[str, Any], seeds: Sequence[int], settings: Sequence[dict] | None = None
) -> None:
    """The final table: return per seed (or, for a sweep, per configuration with a 95% CI)."""
    title = f"{summary['algo'].upper()} on {summary['env']}"
    if settings is None:
        table = Table(title=f"{title}: final return (last 10% of updates)")
        table.add_column("seed", justify="right")
        table.add_column("final return", justify="right")
        for seed, ret in zip(seeds, summary["final_return_per_seed"]):
            table.add_row(str(seed), "n/a" if ret is None else f"{ret:.1f}")
        mean, std = summary["final_return_mean"], summary["final_return_std"]
        table.add_row("mean ± std", "n/a" if mean is None else f"{mean:.1f} ± {std:.1f}", style="bold")
    else:
        table = Table(title=f"{title}: configurations ranked by final return (mean ± 95% CI over seeds)")
        names = list(summary["sweep"])
        for name in names:
            table.add_column(name, justify="right")
        table.add_column("final return", justify="right")
        table.add_column("seeds", justify="right")
        for row in summary["ranking"]:
            mean, half = row["final_return_mean"], row["ci95"]
            value = "n/a" if mean is None else f"{mean:.1f}" + ("" if half is None else f" ± {half:.1f}")
            table.add_row(*[f"{row['hparams'][n]:g}" for n in names], value, str(row["num_seeds"]))
    console.print(table)
    console.print(
        f"env steps {summary['total_env_steps']:,} in {summary['train_s']:.1f} s "
        f"({summary['sps']:,.0f} SPS), compile {summary['compile_s']:.1f} s, "
        f"total {summary['total_s']:.1f} s -> {summary['run_dir']}"
    )
