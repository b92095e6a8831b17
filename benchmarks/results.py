"""The results table: each preset trained for N seeds, PPO and GRPO per environment.

    python benchmarks/results.py [--presets NAME ...] [--num-seeds 8] [--max-steps N]
                                 [--eval-episodes 128] [--out-dir benchmarks/results/suite-<platform>] [--report-only]
                                 [--cpu-devices N] [--from-run RUN_DIR] [--overwrite]

Each preset runs as one ``jax.jit(jax.vmap(train))`` call over its seeds (seed i
is ``jax.random.key(i)``, as ``--seed 0 --num-seeds N`` on the CLI), the seeds
spread over the CPU's cores as the CLI spreads them (one device per core), compiled
with ``.lower().compile()`` and timed apart from the run (``block_until_ready``).
``--max-steps`` caps a preset's budget (per seed) where the full one does not fit
the machine; the JSON and the table then show both budgets, and nothing is
extrapolated.

``--from-run RUN_DIR`` takes one preset's record from a finished CLI run of it
instead (``python -m jaxrl_po.train --preset NAME --num-seeds N --checkpoint-every K``):
a budget too long for one sitting can be trained in several, stopped with Ctrl-C
and continued with ``--resume``. It gives the same runs as training here (same
seeds, same layout over the cores; segments do not change results); the times
are the sum of the sittings in its ``summary.json``.

Writes ``<out-dir>/<preset>.json`` per preset (config, per-seed final returns,
downsampled per-seed learning curves, wall/compile/run seconds, machine), then
reads every preset JSON in ``out-dir`` and writes ``table.md`` and one figure per
environment (``<env>.png`` / ``.svg``: mean episode return ± 95% CI over seeds,
PPO and GRPO on the same axes). Runs can be done in pieces: each call adds its
presets' JSON and redraws the whole table. A preset that already has a JSON in
``out-dir`` is refused before anything trains, unless ``--overwrite`` is given:
a trial call (``--max-steps 4096``) must not replace hours of a full-budget record.
So is an ``out-dir`` holding another JSON file that is not a preset record (the
table could not be drawn from it), and one that cannot be written. A missing
``out-dir`` is made when the first record is written (a refused or failed
call leaves none behind).

Final return: mean episode return over the last 10% of updates (as the CLI's
``summary.json``), i.e. of the episodes the policy played while it was still
learning. GRPO budgets count alive env steps.

Final policy: after training, every seed's final policy plays ``--eval-episodes``
whole episodes with sampled actions and as many with the greedy action (argmax /
mean), from the same starts (``jaxrl_po.evaluate.evaluate_trained``, evaluation
seed 0); the second table shows the mean over seeds of each seed's mean return,
± 95% CI. Published baselines usually report such an evaluation of the trained
policy, not training-time episodes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax

from benchmark_cli import Parser, check_directory, path_argument  # beside this script
from jaxrl_po.config import ConfigError, whole_number_argument
from jaxrl_po.train import split_cpu_or_exit

# One JAX device per core, exactly as the CLI makes them, so the seeds are spread over the cores
# (respecting --cpu-devices and a device count the user fixed); before the imports below start
# the backend (gymnax creates arrays).
CORES_SPLIT = split_cpu_or_exit(sys.argv[1:])

import numpy as np  # noqa: E402

from jaxrl_po import make_train  # noqa: E402
from jaxrl_po.checkpoint import CheckpointError  # noqa: E402
from jaxrl_po.config import to_dict  # noqa: E402
from jaxrl_po.evaluate import check_episodes, evaluate_trained  # noqa: E402
from jaxrl_po.logs import (  # noqa: E402
    downsample_curve, error_reason, final_returns, mean_ci_text, none_if_nan, read_json, replace_refusal, write_json,
    write_text)
from jaxrl_po.plot import Curve, common_grid, forward_fill, plot_curves  # noqa: E402
from jaxrl_po.presets import PRESETS  # noqa: E402
from jaxrl_po.runner import TrainedRuns, job_layout, load_trained  # noqa: E402
from jaxrl_po.stop import exit_process, run_stoppable  # noqa: E402
from jaxrl_po.sweep import confidence_interval, mean_and_ci  # noqa: E402
from jaxrl_po.timing import compile_then_run_over_devices, machine_info  # noqa: E402

CURVE_POINTS = 100  # learning-curve points kept per seed
EVAL_EPISODES = 128  # final-policy episodes per seed and mode
EVAL_MODES = ("stochastic", "greedy")

# env -> (published PPO figure, its budget, our target), from the gymnax baselines as quoted in issue 6.
PUBLISHED = {
    "CartPole-v1": ("500", 5e5, 500.0),
    "Acrobot-v1": ("-80", 5e5, -80.0),
    "Pendulum-v1": ("-130 to -200", 1e6, -150.0),
    "MountainCarContinuous-v0": ("≈0 (fails)", 1e6, 90.0),
    "Breakout-MinAtar": ("28 (best ≈40)", 1e7, 40.0),
    "SpaceInvaders-MinAtar": ("131", 1e7, 131.0),
    "Asterix-MinAtar": ("15", 1e7, 15.0),
    "Freeway-MinAtar": ("58", 1e7, 58.0),
}


def evaluate_final(trained: TrainedRuns, episodes: int) -> dict:
    """Per-seed mean return of the final policies over ``episodes`` episodes, sampled and greedy, with the
    mean over seeds and its 95% CI (``evaluate``'s for the one configuration of a preset's runs).

    A seed stopped on non-finite values gets None: its last good policy is not a final one. The policies
    play on one device, as ``python -m jaxrl_po.evaluate RUN_DIR`` plays them from a checkpoint: spread
    over the cores, the same episodes would round differently (README, Seeds).
    """
    trained = trained._replace(state=jax.device_put(trained.state, jax.devices()[0]))
    result = evaluate_trained(trained, episodes)
    (config,) = result["configs"]
    record = {"episodes": episodes}
    for mode in EVAL_MODES:
        per_seed = [None if run["stopped_nonfinite"] else run[mode]["mean"] for run in result["runs"]]
        record[mode] = {"mean": config[mode]["mean"], "ci95": config[mode]["ci95"], "per_seed": per_seed}
    return record


def make_record(name: str, trained: TrainedRuns, devices: int, seconds: dict, eval_episodes: int) -> dict:
    """The JSON record of a preset's finished runs (seeds 0..N-1); ``seconds``: wall_s, compile_s, run_s."""
    config, metrics, num_seeds = trained.config, trained.metrics, len(trained.seeds)
    returns = np.asarray(metrics.episode_return, float)
    steps = np.asarray(metrics.env_steps, np.int64)
    stopped = (np.asarray(metrics.nonfinite) != 0).any(axis=1)  # as in summary.json: no final return
    finals = np.where(stopped, np.nan, final_returns(returns, steps))
    mean, half = confidence_interval(finals)
    used = steps.max(axis=1)
    start = time.perf_counter()
    final_policy = evaluate_final(trained, eval_episodes)
    final_policy["wall_s"] = time.perf_counter() - start
    return {
        "preset": name, "algo": trained.algo_name, "env": config.env, "config": to_dict(config),
        "num_seeds": num_seeds, "devices": devices, "budget": config.total_timesteps,
        "preset_budget": PRESETS[name].config.total_timesteps,
        "budget_unit": "alive env steps" if trained.algo_name == "grpo" else "env steps",
        "final_return_mean": none_if_nan(mean), "final_return_ci95": none_if_nan(half),
        "final_return_per_seed": [none_if_nan(float(f)) for f in finals],
        "env_steps_used_per_seed": [int(u) for u in used],
        "nonfinite_runs": int(stopped.sum()), "stopped_per_seed": [bool(x) for x in stopped],
        **seconds, "sps": float(used.sum()) / seconds["run_s"],
        "final_policy": final_policy,
        "curves": [downsample_curve(r, s, CURVE_POINTS) for r, s in zip(returns, steps)],
        "machine": machine_info(),
    }


def run_preset(name: str, num_seeds: int, max_steps: int | None, eval_episodes: int = EVAL_EPISODES) -> dict:
    """Train preset ``name`` for ``num_seeds`` seeds in one vmapped call; the JSON record."""
    config = PRESETS[name].config
    if max_steps is not None and config.total_timesteps > max_steps:
        config = config.replace(total_timesteps=max_steps)
    keys = jax.vmap(jax.random.key)(np.arange(num_seeds, dtype=np.uint32))
    start = time.perf_counter()
    layout = job_layout(config, num_seeds, None, CORES_SPLIT)  # the CLI's layout for these runs
    out, compile_s, run_s = compile_then_run_over_devices(make_train(config), keys, layout)
    seconds = {"wall_s": time.perf_counter() - start, "compile_s": compile_s, "run_s": run_s}
    trained = TrainedRuns(PRESETS[name].algo, config, list(range(num_seeds)), [{}] * num_seeds, out.state,
                          int(np.asarray(out.state.update).max()), out.metrics)
    return make_record(name, trained, layout.devices, seconds, eval_episodes)


def record_from_run(name: str, run_dir: Path, eval_episodes: int = EVAL_EPISODES) -> dict:
    """The record of preset ``name`` from a finished CLI run of it (``--preset NAME --seed 0``), however many
    sittings (``--resume``) it took: its latest checkpoint, and the seconds of every session in ``summary.json``.

    Raises ConfigError when the run is not that preset's (algo, every setting but a smaller budget, seeds
    0..N-1, no sweep), did not finish, or lacks the time of a sitting (one killed, then resumed from a checkpoint
    of an older jaxrl_po, which did not record the sittings).
    """
    field = "from_run"
    try:
        trained = load_trained(run_dir)
    except CheckpointError as err:  # its message names the run directory
        raise ConfigError(field, str(err)) from None
    try:
        summary = read_json(run_dir / "summary.json")
    except (OSError, ValueError) as err:
        raise ConfigError(field, f"{run_dir / 'summary.json'}: {error_reason(err)}") from None
    preset = PRESETS[name]
    expected = to_dict(preset.config.replace(total_timesteps=trained.config.total_timesteps))
    differ = sorted(k for k, v in to_dict(trained.config).items() if expected.get(k) != v)
    if trained.algo_name != preset.algo or differ or trained.config.total_timesteps > preset.config.total_timesteps:
        raise ConfigError(field, f"{run_dir} is not a run of preset {name} "
                                 f"(algo {trained.algo_name}; settings that differ: {', '.join(differ) or 'none'})")
    if trained.seeds != list(range(len(trained.seeds))) or any(trained.settings):
        raise ConfigError(field, f"{run_dir}: seeds must be 0..N-1 without a sweep, got {trained.seeds}")
    if not isinstance(summary, dict) or summary.get("interrupted", True):
        raise ConfigError(field, f"{run_dir} did not finish; continue it with --resume")
    try:
        sessions, total, devices = summary.get("sessions", []), summary["total_env_steps"], summary["num_devices"]
        covered = sum(s["env_steps"] or 0 for s in sessions)
        compile_s, run_s = sum(s["compile_s"] for s in sessions), sum(s["train_s"] for s in sessions)
    except (KeyError, TypeError) as err:
        raise ConfigError(field, f"{run_dir}: summary.json is not a finished run's summary ({err!r})") from None
    if covered != total:
        raise ConfigError(field, f"{run_dir}: summary.json's sessions do not cover all {total} "
                                 "env steps (a sitting was killed, and the resume went on from a checkpoint of an "
                                 "older jaxrl_po, which did not record the sittings), so its time is unknown")
    seconds = {"wall_s": compile_s + run_s, "compile_s": compile_s, "run_s": run_s}
    record = make_record(name, trained, devices, seconds, eval_episodes)
    return {**record, "from_run": str(run_dir), "sessions": len(sessions)}


def curve_of(record: dict) -> Curve:
    """The plotted line of one preset record: mean and 95% CI over seeds on a common step grid."""
    steps = [np.asarray(c["env_steps"], float) for c in record["curves"]]
    returns = [forward_fill(np.asarray([np.nan if r is None else r for r in c["episode_return"]], float))
               for c in record["curves"]]
    stopped = record.get("stopped_per_seed", [False] * len(steps))  # (a record written before it was kept)
    grid, per_seed = common_grid(steps, returns, CURVE_POINTS, stopped)
    mean, half = mean_and_ci(per_seed)
    return Curve(f"{record['algo'].upper()} ({record['preset']})", grid, mean, half, len(steps), per_seed,
                 sum(stopped))


def steps_text(steps: float) -> str:
    """5e5, 1.5e6, 1e7."""
    return f"{steps:.2g}".replace("e+0", "e").replace("e+", "e")


def cell(record: dict | None) -> str:
    """'mean ± ci (n seeds, budget)' for the table; '—' where the algorithm was not run."""
    if record is None:
        return "—"
    value = mean_ci_text(record["final_return_mean"], record["final_return_ci95"])
    cut = "" if record["budget"] == record["preset_budget"] else f", cut from {steps_text(record['preset_budget'])}"
    unit = " alive" if record["algo"] == "grpo" else ""
    return (f"{value} ({record['num_seeds']} seeds, {steps_text(record['budget'])}{unit} steps{cut}, "
            f"{record['wall_s'] / 60:.1f} min)")


def eval_cell(record: dict | None, mode: str) -> str:
    """'mean ± ci' of the final policies in ``mode``; '—' where not run, 'not evaluated' for older records."""
    if record is None:
        return "—"
    if "final_policy" not in record:
        return "not evaluated"
    value = record["final_policy"][mode]
    return mean_ci_text(value["mean"], value["ci95"])


def read_records(out_dir: Path, replaced: Sequence[str] = ()) -> list[dict]:
    """Every preset record in ``out_dir`` (its ``*.json``), but the ``replaced`` file names, which a run will
    write anew. Raises ConfigError (``out_dir``) on a JSON file that is not one, which the table cannot hold:
    called before training too, so that it is found before the work, not after."""
    records = []
    for path in sorted(out_dir.glob("*.json")):
        if path.name in replaced:
            continue
        try:
            record = read_json(path)
        except (OSError, ValueError) as err:
            raise ConfigError("out_dir", f"cannot read {path}: {err}") from None
        if not isinstance(record, dict) or not {"preset", "env", "algo", "curves"} <= record.keys():
            raise ConfigError("out_dir", f"{path} is not a preset record of this script; move it elsewhere")
        records.append(record)
    return records


def report(out_dir: Path) -> str:
    """Read every preset record in ``out_dir``; write table.md and one figure per env; return the table."""
    records = read_records(out_dir)
    by_env: dict[str, dict[str, dict]] = {}
    for record in records:
        by_env.setdefault(record["env"], {})[record["algo"]] = record
    lines = ["| env | PPO (mean ± 95% CI) | GRPO (mean ± 95% CI) | published PPO (budget) | target |",
             "|---|---|---|---|---|"]
    episodes = sorted({r["final_policy"]["episodes"] for r in records if "final_policy" in r})
    final_lines = [f"Final policies, {'/'.join(map(str, episodes)) or 'no'} episodes per seed and mode "
                   "(mean over seeds ± 95% CI):", "",
                   "| env | PPO sampled | PPO greedy | GRPO sampled | GRPO greedy | target |",
                   "|---|---|---|---|---|---|"]
    for env in sorted(by_env, key=lambda e: list(PUBLISHED).index(e) if e in PUBLISHED else len(PUBLISHED)):
        algos = by_env[env]
        published, budget, target = PUBLISHED.get(env, ("?", float("nan"), float("nan")))
        lines.append(f"| {env} | {cell(algos.get('ppo'))} | {cell(algos.get('grpo'))} "
                     f"| {published} ({steps_text(budget)}) | {target:g} |")
        final_lines.append(f"| {env} | " + " | ".join(eval_cell(algos.get(a), m) for a in ("ppo", "grpo")
                                                    for m in EVAL_MODES) + f" | {target:g} |")
        plot_curves([curve_of(algos[a]) for a in ("ppo", "grpo") if a in algos], out_dir / env, title=env)
    machines = {f"{r['machine'].get('model_name', r['machine']['processor'])} ({r['machine']['platform']}, "
                f"{r['machine']['cpus']} CPUs, JAX {r['machine']['jax']})" for r in records}
    table = "\n".join(lines) + "\n\n" + "\n".join(final_lines) + "\n\nMachine: " + "; ".join(sorted(machines)) + "\n"
    write_text(out_dir / "table.md", table)
    return table


def describe_record(path: Path) -> str:
    """``name.json (8 seeds, 1e7 steps)``: what the preset record at ``path`` holds, for the overwrite refusal."""
    try:
        record = read_json(path)
        return f"{path.name} ({record['num_seeds']} seeds, {steps_text(record['budget'])} steps)"
    except (OSError, ValueError, KeyError, TypeError):
        return path.name


def check_out_dir(parser: Parser, out_dir: Path, trains: bool) -> None:
    """``--out-dir``: a directory, or one that can be made when the first record is written; a call that trains
    nothing (``--report-only``) redraws the table of one that exists."""
    if out_dir.exists() and not out_dir.is_dir():
        parser.error(f"--out-dir: {out_dir} is not a directory")
    check_directory(parser, "--out-dir", out_dir, out_dir)
    if not trains and not out_dir.exists():
        parser.error(f"--out-dir: {out_dir} does not exist: there is no table to redraw")


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS), metavar="NAME",
                        help=f"presets to run (default: all): {', '.join(PRESETS)}")
    parser.add_argument("--num-seeds", type=whole_number_argument, default=None, help="seeds per preset (default 8)")
    parser.add_argument("--max-steps", type=whole_number_argument, default=None,
                        help="cap each preset's per-seed budget (e.g. 4096 or 5e5)")
    parser.add_argument("--out-dir", type=path_argument, default=None,
                        help="default benchmarks/results/suite-<platform>")
    parser.add_argument("--eval-episodes", type=whole_number_argument, default=EVAL_EPISODES,
                        help="final-policy episodes per seed and mode (sampled, greedy)")
    parser.add_argument("--report-only", action="store_true", help="only redraw table.md and figures")
    parser.add_argument("--from-run", metavar="RUN_DIR", type=path_argument,
                        help="take the one preset named by --presets from this finished CLI run of it "
                             "(python -m jaxrl_po.train --preset NAME --num-seeds N, resumed as often as needed) "
                             "instead of training it")
    parser.add_argument("--cpu-devices", type=whole_number_argument,
                        help="JAX devices the CPU is split into, as the CLI's flag (default: one per core)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the records of --presets already in --out-dir (otherwise they are refused)")
    args = parser.parse_args()
    if args.from_run is not None and (args.report_only or args.num_seeds or args.max_steps):
        parser.error("--from-run: the run sets the seeds and budget, and it is not a report; "
                     "drop --report-only, --num-seeds and --max-steps")
    args.num_seeds = 8 if args.num_seeds is None else args.num_seeds
    if args.num_seeds < 1 or (args.max_steps is not None and args.max_steps < 1):
        parser.error("--num-seeds and --max-steps must be positive")
    try:  # before any training, not after it
        check_episodes(args.eval_episodes)
    except ConfigError as err:
        parser.error(f"--eval-episodes: {err.message}")
    if args.from_run is not None and len(args.presets) != 1:
        parser.error(f"--from-run: name the run's preset with --presets NAME (one), got {len(args.presets)}")
    out_dir = Path(args.out_dir or f"benchmarks/results/suite-{jax.devices()[0].platform}")
    check_out_dir(parser, out_dir, trains=bool(args.presets) and not args.report_only)
    existing = [] if args.report_only or args.overwrite else [
        describe_record(out_dir / f"{name}.json") for name in args.presets if (out_dir / f"{name}.json").exists()]
    if existing:
        parser.error(replace_refusal("--out-dir", out_dir, "; ".join(existing), len(existing)))
    if out_dir.is_dir():
        try:  # the table is drawn from every record there: a file that is not one would fail it after training
            read_records(out_dir, replaced=[] if args.report_only else [f"{name}.json" for name in args.presets])
        except ConfigError as err:
            parser.error(f"--out-dir: {err.message}")
    if not args.report_only:
        for name in args.presets:
            if args.from_run is not None:
                print(f"{name}: from {args.from_run} ...", flush=True)
                try:
                    record = record_from_run(name, Path(args.from_run), args.eval_episodes)
                except ConfigError as err:
                    parser.error(f"--from-run: {err.message}")
            else:
                print(f"{name}: {args.num_seeds} seeds ...", flush=True)
                record = run_preset(name, args.num_seeds, args.max_steps, args.eval_episodes)
            out_dir.mkdir(parents=True, exist_ok=True)  # now that there is a record to write
            write_json(out_dir / f"{name}.json", record)
            print(f"  {cell(record)}; compile {record['compile_s']:.1f} s, {record['sps']:,.0f} SPS; final policy "
                  f"sampled {eval_cell(record, 'stochastic')}, greedy {eval_cell(record, 'greedy')}", flush=True)
    try:
        print(report(out_dir))
    except ConfigError as err:
        parser.error(f"--out-dir: {err.message}")


if __name__ == "__main__":
    exit_process(run_stoppable(main))
