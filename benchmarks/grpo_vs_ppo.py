"""Learning results: PPO against GRPO (and GRPO ablations), 8 seeds per run.

    python benchmarks/grpo_vs_ppo.py [--out benchmarks/results/grpo_vs_ppo-cpu.json] [--quick]
                                     [--only SUBSTRING ...] [--ablation-seeds N] [--overwrite]

``--quick`` is a smoke run: budgets cut 50x, 2 seeds per row (``--ablation-seeds``
still sets the ablation rows').

Each run is one ``jax.jit(jax.vmap(train))`` call over its seeds (seeds 0..N-1 via
``jax.random.split(jax.random.key(0), N)``), compiled with ``.lower().compile()``
and timed apart from the run (``block_until_ready``).

Per run and seed it records the final return (``final_returns``: mean episode
return over the last 10% of updates), the env steps at the first update whose
mean episode return reaches the environment's threshold (``None`` if it never
does) and the budget actually used. Per run: the mean final return with a 95%
Student-t interval across seeds, how many seeds reached the threshold, the
median steps to it (seeds that never reach it count as infinitely slow, so the
median is "not reached" when fewer than half the seeds got there), and compile
and run seconds. PPO budgets are env steps; GRPO budgets are *alive* env steps
(steps after an episode's end are padding, counted apart in ``padded_steps``).

Thresholds (from the issue): CartPole-v1 >= 495 within 1.5 M alive steps,
Acrobot-v1 >= -100 within 0.5 M, Pendulum-v1 >= -200 within 1 M (our choice of
budget).

GRPO rtg advantages use gamma = 1.0 (the library default: undiscounted
return-to-go, so the first step's advantage ranks members exactly as the
outcome advantage does and only the per-step baseline differs).

Writes the JSON (every per-seed number and each run's full config) to ``--out``
(a ``.json`` file) and the markdown table beside it (same name, ``.md``), and
prints the table. ``--only`` re-runs some rows and keeps the others (never across
a quick and a full run: a file holds one or the other). A run that would replace
rows already in ``--out`` (or the whole file, when it is of the other kind), or a
``.md`` that is not the table of the results it adds to, is refused before any
work unless ``--overwrite`` is given.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import numpy as np

from benchmark_cli import (Parser, check_companion, check_json_out, kept_entries, path_argument,  # beside this script
                           replaced_held, save_results)
from jaxrl_po import GRPOConfig, PPOConfig, make_train
from jaxrl_po.config import to_dict, whole_number_argument
from jaxrl_po.logs import (downsample_curve, final_returns, mean_ci_text, none_if_nan, replace_refusal, saved_record,
                           write_text)
from jaxrl_po.stop import exit_process, run_stoppable
from jaxrl_po.sweep import confidence_interval
from jaxrl_po.timing import compile_then_run, machine_info

THRESHOLDS = {"CartPole-v1": 495.0, "Acrobot-v1": -100.0, "Pendulum-v1": -200.0}
MAIN_SEEDS = 8
QUICK_SEEDS = 2  # a smoke run's seeds per row, unless --ablation-seeds says otherwise for the ablations
CURVE_POINTS = 40  # learning-curve points kept per seed in the JSON

# Written out, not taken from the presets: the presets have been tuned since, and a rerun must run the
# configs its labels describe (and that the committed grpo_vs_ppo-cpu.json records).
PPO_ACROBOT = PPOConfig(env="Acrobot-v1", num_envs=64, num_steps=128, update_epochs=4, num_minibatches=8, lr=1e-3,
                        total_timesteps=500_000)
PPO_PENDULUM = PPOConfig(env="Pendulum-v1", num_envs=64, num_steps=128, update_epochs=10, num_minibatches=32,
                         lr=1e-3, gamma=0.95, total_timesteps=1_000_000)
GRPO_CARTPOLE = GRPOConfig(env="CartPole-v1", total_timesteps=1_500_000)
GRPO_ACROBOT = GRPOConfig(env="Acrobot-v1", total_timesteps=500_000)
GRPO_PENDULUM = GRPOConfig(env="Pendulum-v1", total_timesteps=1_000_000)


def grpo_variant(config: GRPOConfig, **options) -> GRPOConfig:
    return config.replace(grpo=dataclasses.replace(config.grpo, **options))


# (name, algo label, variant label, config, main row?) -- main rows first, so a cut run keeps them.
RUNS = [
    ("cartpole-ppo", "PPO", "1024 envs x 16, 4 epochs x 16 mb, lr 2e-3",
     PPOConfig(total_timesteps=1_000_000, update_epochs=4), True),
    ("cartpole-grpo", "GRPO", "outcome, shared starts (defaults)", GRPO_CARTPOLE, True),
    ("acrobot-ppo", "PPO", "64 envs x 128, lr 1e-3", PPO_ACROBOT, True),
    ("acrobot-grpo", "GRPO", "outcome, shared starts", GRPO_ACROBOT, True),
    ("pendulum-ppo", "PPO", "64 envs x 128, 10x32 mb, gamma 0.95", PPO_PENDULUM, True),
    ("pendulum-grpo", "GRPO", "outcome, shared starts", GRPO_PENDULUM, True),
    ("cartpole-grpo-rtg", "GRPO", "rtg (gamma 1.0), shared starts", grpo_variant(GRPO_CARTPOLE, advantage="rtg"), False),
    ("cartpole-grpo-unshared", "GRPO", "outcome, unrelated starts", grpo_variant(GRPO_CARTPOLE, shared_reset=False), False),
    ("acrobot-grpo-rtg", "GRPO", "rtg (gamma 1.0), shared starts", grpo_variant(GRPO_ACROBOT, advantage="rtg"), False),
    ("acrobot-grpo-small", "GRPO", "outcome, 4 groups x 8 (4x the updates)",
     GRPO_ACROBOT.replace(num_envs=32, num_minibatches=2), False),
    ("pendulum-grpo-rtg", "GRPO", "rtg (gamma 1.0), shared starts", grpo_variant(GRPO_PENDULUM, advantage="rtg"), False),
    ("pendulum-grpo-small-rtg", "GRPO", "rtg (gamma 0.95), 4 groups x 8 (4x the updates)",
     grpo_variant(GRPO_PENDULUM.replace(num_envs=32, num_minibatches=2, gamma=0.95), advantage="rtg"), False),
]


def first_reach(returns: np.ndarray, steps: np.ndarray, threshold: float) -> int | None:
    """Env steps at the first update (that ran) whose mean episode return is >= threshold."""
    ran = steps > 0
    hit = np.flatnonzero(ran & (np.nan_to_num(returns, nan=-np.inf) >= threshold))
    return int(steps[hit[0]]) if hit.size else None


def tail_mean(values: np.ndarray, steps: np.ndarray, head: bool) -> float:
    """Mean of a metric over the first (head) or last 10% of the updates that ran."""
    v = values[steps > 0]
    n = max(1, len(v) // 10)
    v = v[:n] if head else v[-n:]
    return float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")


def run_one(name: str, algo: str, variant: str, config, num_seeds: int) -> dict:
    threshold = THRESHOLDS[config.env]
    keys = jax.random.split(jax.random.key(0), num_seeds)
    out, compile_s, run_s = compile_then_run(jax.vmap(make_train(config)), keys)
    m = out.metrics
    returns, steps = np.asarray(m.episode_return, float), np.asarray(m.env_steps, np.int64)
    finals = final_returns(returns, steps)
    mean, half = confidence_interval(finals)
    reach = [first_reach(r, s, threshold) for r, s in zip(returns, steps)]
    reached = [r for r in reach if r is not None]
    median = float(np.median([np.inf if r is None else r for r in reach]))
    used = steps.max(axis=1)  # cumulative env steps (GRPO: alive) at the last update that ran
    seeds = []
    for i in range(num_seeds):
        seed = {"seed_index": i, "final_return": none_if_nan(float(finals[i])),
                "steps_to_threshold": reach[i], "env_steps_used": int(used[i]),
                "updates": int((steps[i] > 0).sum()), "curve": downsample_curve(returns[i], steps[i], CURVE_POINTS)}
        if algo == "GRPO":
            seed["padded_steps"] = float(np.nansum(np.asarray(m.padded_steps)[i]))
            zs = np.asarray(m.zero_spread_frac, float)[i]
            seed["zero_spread_frac_first10pct"] = none_if_nan(tail_mean(zs, steps[i], head=True))
            seed["zero_spread_frac_last10pct"] = none_if_nan(tail_mean(zs, steps[i], head=False))
        seeds.append(seed)
    total_steps = int(used.sum())
    return {
        "name": name, "env": config.env, "algo": algo, "variant": variant,
        "config_class": type(config).__name__, "config": to_dict(config),
        "num_seeds": num_seeds, "budget": config.total_timesteps,
        "budget_unit": "alive env steps" if algo == "GRPO" else "env steps",
        "threshold": threshold,
        "final_return_mean": none_if_nan(mean), "final_return_ci95": none_if_nan(half),
        "final_return_per_seed": [none_if_nan(float(f)) for f in finals],
        "seeds_final_at_threshold": int(np.sum(finals >= threshold)),
        "seeds_reaching_threshold": len(reached),
        "median_steps_to_threshold": None if math.isinf(median) else median,
        "median_steps_to_threshold_of_reaching_seeds": float(np.median(reached)) if reached else None,
        "steps_to_threshold_per_seed": reach,
        "compile_s": compile_s, "run_s": run_s, "sps": total_steps / run_s,
        "seeds": seeds,
    }


def fmt_steps(x: float | None) -> str:
    return "not reached" if x is None else f"{x / 1e6:.2f} M"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| env (threshold) | algo / variant | budget / seed | seeds | final return (mean ± 95% CI) "
        "| seeds reaching threshold | median steps to threshold | compile s | run s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        final = mean_ci_text(r["final_return_mean"], r["final_return_ci95"])
        unit = "alive" if r["algo"] == "GRPO" else "steps"
        lines.append(
            f"| {r['env']} (≥ {r['threshold']:g}) | {r['algo']}: {r['variant']} "
            f"| {r['budget'] / 1e6:g} M {unit} | {r['num_seeds']} | {final} "
            f"| {r['seeds_reaching_threshold']}/{r['num_seeds']} | {fmt_steps(r['median_steps_to_threshold'])} "
            f"| {r['compile_s']:.1f} | {r['run_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--out", type=path_argument, default=None,
                        help="a .json file (default benchmarks/results/grpo_vs_ppo-<platform>[-quick].json)")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny budgets and {QUICK_SEEDS} seeds per row (a smoke run)")
    parser.add_argument("--only", nargs="*", default=None, help="run only the runs whose name contains one of these")
    parser.add_argument("--ablation-seeds", type=whole_number_argument, default=None,
                        help=f"seeds for the GRPO ablation rows (default {MAIN_SEEDS}; --quick {QUICK_SEEDS}); "
                             f"main rows use {MAIN_SEEDS} ({QUICK_SEEDS} with --quick)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the rows at --out that this run re-runs (all of them without --only; the "
                             "whole file if it is of the other kind, quick or full), and a .md beside it that is "
                             "not its table")
    args = parser.parse_args()
    if args.only and not any(s in name for name, *_ in RUNS for s in args.only):
        parser.error(f"--only: {' '.join(args.only)} matches no run; the runs are {', '.join(r[0] for r in RUNS)}")
    main_seeds = QUICK_SEEDS if args.quick else MAIN_SEEDS
    # An explicit --ablation-seeds wins over --quick's default, as --budget-s does in scaling.py.
    ablation_seeds = main_seeds if args.ablation_seeds is None else args.ablation_seeds
    if ablation_seeds < 1:
        parser.error(f"--ablation-seeds: must be positive, got {ablation_seeds}")
    suffix = "-quick" if args.quick else ""
    out = Path(args.out or f"benchmarks/results/grpo_vs_ppo-{jax.devices()[0].platform}{suffix}.json")
    check_json_out(parser, out)
    md = out.with_suffix(".md")
    rerun = lambda name: not args.only or any(s in name for s in args.only)
    previous = saved_record(out)
    kept = kept_entries(previous, args.quick, "runs", ("name",))
    replaced = [r["name"] for r in kept if rerun(r["name"])]
    held = None if args.overwrite else replaced_held(previous, args.quick, kept, replaced, "row")
    if held:  # adding rows is fine; replacing one needs --overwrite
        parser.error(replace_refusal("--out", out, held, max(len(replaced), 1), record=previous))
    check_companion(parser, md, "table", redrawn=bool(kept), overwrite=args.overwrite)

    results = {"machine": machine_info(), "quick": args.quick, "thresholds": THRESHOLDS,
               "seeds_main": main_seeds, "seeds_ablation": ablation_seeds, "runs": []}
    if args.only and kept:  # re-running some rows: keep the others from the last run
        results["runs"] = [r for r in kept if not rerun(r["name"])]
        results["total_wall_s_previous"] = previous.get("total_wall_s")
    start = time.perf_counter()
    for name, algo, variant, config, main_row in RUNS:
        if not rerun(name):
            continue
        seeds = main_seeds if main_row else ablation_seeds
        if args.quick:
            config = config.replace(total_timesteps=max(config.steps_per_update, config.total_timesteps // 50))
        print(f"[{time.perf_counter() - start:7.1f} s] {name}: {seeds} seeds, {config.total_timesteps:,} steps/seed",
              flush=True)
        row = run_one(name, algo, variant, config, seeds)
        row["main"] = main_row
        results["runs"].append(row)
        finals = ", ".join("n/a" if f is None else f"{f:.1f}" for f in row["final_return_per_seed"])
        print(f"    final per seed [{finals}]; reached {row['seeds_reaching_threshold']}/{seeds}; "
              f"compile {row['compile_s']:.1f} s, run {row['run_s']:.1f} s", flush=True)
        results["total_wall_s"] = time.perf_counter() - start
        save_results(out, results)  # after every run, so a cut run keeps its rows
    results["total_wall_s"] = time.perf_counter() - start + (results.pop("total_wall_s_previous", None) or 0.0)
    save_results(out, results)
    table = markdown(results["runs"])
    m = results["machine"]
    write_text(
        md,
        f"PPO vs GRPO, {results['seeds_main']} seeds per main row, {results['seeds_ablation']} per GRPO ablation"
        f"{' (QUICK smoke run: tiny budgets, numbers meaningless)' if args.quick else ''}. "
        f"Machine: {m.get('model_name', m['processor'])}, {m['cpus']} CPUs, JAX {m['jax']} ({m['platform']}). "
        f"Total wall time {results['total_wall_s'] / 60:.1f} min. "
        "GRPO budgets count alive env steps only. Final return: mean of the last 10% of updates. "
        "Steps to threshold: first update whose mean episode return reaches it; the median counts seeds that "
        "never reach it as slower than any that do. rtg uses gamma 1.0 unless the row says otherwise.\n\n" + table
    )
    print()
    print(table)
    print(f"total wall time {results['total_wall_s']:.1f} s; wrote {out} and {md}")


if __name__ == "__main__":
    exit_process(run_stoppable(main))
