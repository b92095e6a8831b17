"""Memory of a long run: does the CLI host loop grow host or device memory?

    python benchmarks/memory.py [--updates N] [--num-seeds 1] [--quick] [--out PATH.json] [--overwrite]

Trains a small PPO CartPole-v1 config (64 envs x 16 steps = 1,024 env steps per
update, 1 epoch x 16 minibatches; 1e4 updates = 1.02e7 env steps per seed) through
the CLI's host loop (``runner.train_job`` with a ``JobSpec``, as ``python -m
jaxrl_po.train`` runs it: compiled segments of about 1 s, metrics.csv streamed,
a checkpoint at the end), with one extra sink that samples after every segment:

* host RSS (``VmRSS`` from /proc/self/status) and its peak (``VmHWM``);
* device memory (``memory_stats()`` of the first device: ``bytes_in_use`` and
  ``peak_bytes_in_use``; None on CPU, where device buffers are host RSS);
* the metric rows kept so far.

The only state that grows with the run is the metric history the host loop
keeps for the final summary and checkpoints (``runner.History``): every
segment's rows. Two expected sizes are reported beside the measured growth:

* ``rows``: metric rows that ran x fields x 4 bytes (every field is f32 / i32),
  summed over runs -- the per-update scalars themselves;
* ``held``: the bytes of the segment arrays History keeps: each segment trimmed
  to its longest run's rows (so for runs in lockstep, the rows themselves).

Reported: RSS after the first segment ("start", compile done), at 10% and 50% of
the updates and after the last segment ("end"), the growth start -> end and
10% -> end next to the expected growth over the same updates, and the slope of
RSS against updates over the second half of the run (least squares) next to
the expected bytes per update. ``--quick`` runs 1,000 updates unless ``--updates`` says otherwise.
Writes ``benchmarks/results/memory-<platform>[-quick].json`` (``--out``: a ``.json`` file);
a file already there is replaced only with ``--overwrite`` (refused before any work).
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from rich.console import Console

from benchmark_cli import Parser, check_json_out, path_argument, save_results  # beside this script
from jaxrl_po import PPOConfig
from jaxrl_po.config import to_dict, whole_number_argument
from jaxrl_po.logs import NOT_RESULTS, make_run_dir, replace_refusal, saved_record
from jaxrl_po.runner import MAX_SEGMENT_ROWS, JobSpec, train_job
from jaxrl_po.stop import STOP_SIGNALS, exit_process, run_stoppable
from jaxrl_po.sweep import make_runs
from jaxrl_po.timing import machine_info

CONFIG = PPOConfig(env="CartPole-v1", num_envs=64, num_steps=16, update_epochs=1, num_minibatches=16)
UPDATES, QUICK_UPDATES = 10_000, 1_000  # a full run's and a smoke run's, unless --updates is given


def proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in bytes; None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    rss = proc_status_bytes("VmRSS")
    if rss is None:  # not Linux: the peak is the best resource offers
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if platform.system() == "Darwin" else 1024)
    return rss


def device_memory() -> dict | None:
    """bytes_in_use / peak_bytes_in_use of the first device, or None where the backend has no stats (CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if k in stats}


class MemorySampler:
    """A JobSpec sink: after every compiled segment, record memory and the metric rows kept so far."""

    def __init__(self):
        self.samples: list[dict] = []
        self.rows = 0  # metric rows that ran, all runs
        self.row_bytes = 0  # rows x bytes per row
        self.held_bytes = 0  # bytes of the segment arrays the host loop's History keeps
        self.start = time.perf_counter()

    def append(self, segment, first_update: np.ndarray) -> None:
        ran = np.asarray(segment.env_steps) > 0
        per_row = sum(np.asarray(x).dtype.itemsize for x in segment)
        self.rows += int(ran.sum())
        self.row_bytes += int(ran.sum()) * per_row
        longest = int(ran.sum(1).max())  # History trims each segment to the rows that ran
        self.held_bytes += sum(np.asarray(x)[:, :longest].nbytes for x in segment)
        self.samples.append({
            "segment": len(self.samples) + 1,
            "t_s": round(time.perf_counter() - self.start, 3),
            "update": int((first_update - 1 + ran.sum(axis=1)).max()),
            "segment_updates": int(ran.sum(axis=1).max()),
            "rss_bytes": rss_bytes(),
            "rss_peak_bytes": proc_status_bytes("VmHWM"),
            "device": device_memory(),
            "metric_rows": self.rows,
            "metric_row_bytes": self.row_bytes,
            "history_held_bytes": self.held_bytes,
        })

    def close(self) -> None:
        pass


def at_fraction(samples: list[dict], fraction: float) -> dict:
    """The first sample at or past ``fraction`` of the last sample's update."""
    target = fraction * samples[-1]["update"]
    return next(s for s in samples if s["update"] >= target)


def growth(a: dict, b: dict) -> dict:
    """Measured growth from sample a to sample b next to the expected (metric rows) growth."""
    out = {"from_update": a["update"], "to_update": b["update"],
           "rss_growth_bytes": b["rss_bytes"] - a["rss_bytes"],
           "expected_rows_bytes": b["metric_row_bytes"] - a["metric_row_bytes"],
           "expected_held_bytes": b["history_held_bytes"] - a["history_held_bytes"]}
    if a["device"] and b["device"]:
        out["device_growth_bytes"] = b["device"]["bytes_in_use"] - a["device"]["bytes_in_use"]
    return out


def slope(samples: list[dict], key, start_fraction: float = 0.5) -> float | None:
    """Least-squares bytes per update of ``key(sample)`` over the samples past ``start_fraction`` of the run."""
    tail = [s for s in samples if s["update"] >= start_fraction * samples[-1]["update"]]
    if len(tail) < 3:
        return None
    x = np.asarray([s["update"] for s in tail], float)
    y = np.asarray([key(s) for s in tail], float)
    return float(np.polyfit(x, y, 1)[0])


def mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:+.2f} MiB"


def main() -> int | None:
    parser = Parser(description=__doc__)
    parser.add_argument("--updates", type=whole_number_argument, default=None,
                        help=f"PPO updates per run, 1,024 env steps each "
                             f"(default {UPDATES:,}; --quick {QUICK_UPDATES:,})")
    parser.add_argument("--num-seeds", type=whole_number_argument, default=1, help="runs trained at once (vmapped)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_UPDATES:,} updates by default")
    parser.add_argument("--out", type=path_argument, default=None,
                        help="a .json file (default benchmarks/results/memory-<platform>[-quick].json)")
    parser.add_argument("--run-dir", type=path_argument, default=None,
                        help="keep the run directory here (default: a temporary one)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already at --out")
    args = parser.parse_args()
    # An explicit --updates wins over --quick's default, as --budget-s does in scaling.py.
    updates = args.updates if args.updates is not None else QUICK_UPDATES if args.quick else UPDATES
    if updates < 1 or args.num_seeds < 1:
        parser.error(f"--updates and --num-seeds must be positive, got {updates} and {args.num_seeds}")
    platform_name = jax.devices()[0].platform
    out = Path(args.out or f"benchmarks/results/memory-{platform_name}{'-quick' if args.quick else ''}.json")
    check_json_out(parser, out)
    previous = None if args.overwrite else saved_record(out)
    if previous is not None:
        updates = previous.get("updates")
        held = f"a run of {updates:,} updates" if isinstance(updates, int) else NOT_RESULTS
        parser.error(replace_refusal("--out", out, held, record=previous))
    if args.run_dir:
        try:
            make_run_dir(args.run_dir)  # a fresh directory: never another run's
        except OSError as err:
            parser.error(f"--run-dir: {err}")
    config = CONFIG.replace(total_timesteps=updates * CONFIG.steps_per_update)
    config.validate()

    seeds = list(range(args.num_seeds))
    runs = make_runs(config, seeds)
    meta = json.loads(json.dumps({"algo": "ppo", "seeds": seeds, "sweep": {}, **to_dict(config)}))
    sampler = MemorySampler()
    rss_before = rss_bytes()
    device_before = device_memory()
    print(f"PPO CartPole-v1, {args.num_seeds} run(s) x {config.num_updates:,} updates "
          f"({config.total_timesteps:,} env steps each) through runner.train_job ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir or tmp)
        job = JobSpec(algo_name="ppo", config=config, runs=runs, run_dir=run_dir, meta=meta,
                      progress=False, make_sinks=lambda resumed_env_steps: [sampler])
        summary, code = train_job(job, Console(quiet=True))
    if code - 128 in STOP_SIGNALS:  # stopped after a segment: what it measured is a part of the job, not written
        print(f"interrupted ({STOP_SIGNALS[code - 128]}); {out} was not written", file=sys.stderr)
        return code
    rss_after = rss_bytes()
    rss_peak = proc_status_bytes("VmHWM")  # the whole process's, the checkpoint saved after the last segment included

    s = sampler.samples
    start, tenth, half, end = s[0], at_fraction(s, 0.1), at_fraction(s, 0.5), s[-1]
    row_bytes_per_update = end["metric_row_bytes"] / max(end["metric_rows"], 1) * args.num_seeds
    results = {
        "machine": machine_info(), "quick": args.quick, "exit_code": code,
        "config": to_dict(config), "num_seeds": args.num_seeds, "updates": config.num_updates,
        "segments": len(s), "max_segment_rows": MAX_SEGMENT_ROWS,
        "compile_s": summary["compile_s"], "train_s": summary["train_s"], "sps": summary["sps"],
        "rss_before_compile_bytes": rss_before, "rss_after_job_bytes": rss_after,
        "device_before": device_before,
        "rss_bytes": {"start": start["rss_bytes"], "10%": tenth["rss_bytes"], "50%": half["rss_bytes"],
                      "end": end["rss_bytes"]},
        "rss_peak_bytes": rss_peak,
        "device": {"start": start["device"], "10%": tenth["device"], "50%": half["device"], "end": end["device"]},
        "growth_start_to_end": growth(start, end),
        "growth_10pct_to_end": growth(tenth, end),
        "metric_row_bytes_per_update": row_bytes_per_update,
        "slope_second_half": {
            "rss_bytes_per_update": slope(s, lambda x: x["rss_bytes"]),
            "expected_rows_bytes_per_update": slope(s, lambda x: x["metric_row_bytes"]),
            "expected_held_bytes_per_update": slope(s, lambda x: x["history_held_bytes"]),
            "device_bytes_per_update": slope(s, lambda x: x["device"]["bytes_in_use"]) if end["device"] else None,
        },
        "samples": s,
    }
    save_results(out, results)

    g, g10, sl = results["growth_start_to_end"], results["growth_10pct_to_end"], results["slope_second_half"]
    print(f"compile {summary['compile_s']:.1f} s, {config.num_updates:,} updates in {summary['train_s']:.1f} s "
          f"({summary['sps']:,.0f} SPS), {len(s)} segments; exit code {code}")
    print("| point | update | host RSS | device bytes_in_use |")
    print("|---|---:|---:|---:|")
    for name, sample in (("start (after 1st segment)", start), ("10%", tenth), ("50%", half), ("end", end)):
        dev = "n/a" if sample["device"] is None else f"{sample['device']['bytes_in_use'] / 2**20:.1f} MiB"
        print(f"| {name} | {sample['update']:,} | {sample['rss_bytes'] / 2**20:.1f} MiB | {dev} |")
    for label, gr in (("start -> end", g), ("10% -> end", g10)):
        print(f"RSS growth {label}: {mib(gr['rss_growth_bytes'])}; expected: metric rows {mib(gr['expected_rows_bytes'])}, "
              f"as History holds them {mib(gr['expected_held_bytes'])}"
              + (f"; device {mib(gr['device_growth_bytes'])}" if "device_growth_bytes" in gr else ""))
    fmt = lambda x: "n/a" if x is None else f"{x:,.1f}"
    print(f"second-half slope: RSS {fmt(sl['rss_bytes_per_update'])} B/update; expected rows "
          f"{fmt(sl['expected_rows_bytes_per_update'])}, held {fmt(sl['expected_held_bytes_per_update'])} B/update"
          + (f"; device {fmt(sl['device_bytes_per_update'])} B/update" if sl["device_bytes_per_update"] is not None else ""))
    print(f"RSS before compiling {rss_before / 2**20:.1f} MiB, after the job (checkpoint saved) {rss_after / 2**20:.1f} MiB, "
          f"peak {'n/a' if rss_peak is None else f'{rss_peak / 2**20:.1f} MiB'}")  # None where there is no /proc
    print(f"wrote {out}")


if __name__ == "__main__":
    exit_process(run_stoppable(main))
