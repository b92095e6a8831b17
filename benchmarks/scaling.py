"""Scaling: env steps per second and compile time against batch size and vmapped seeds.

    python benchmarks/scaling.py [--quick] [--only SUBSTRING ...] [--sweep {both,envs,seeds}]
                                 [--budget-s S] [--max-envs N] [--max-seeds N] [--max-total-envs N]
                                 [--envs-per-seed N] [--max-update-s S] [--grpo-horizon H] [--plot-only]
                                 [--out PATH.json] [--overwrite]

Two sweeps, for PPO and GRPO on CartPole-v1 and Breakout-MinAtar (64-64 tanh MLPs;
Breakout's 10x10x4 observation is flattened to 400 inputs):
  * num_envs 64, 256, 1024, 4096, 16384 for one agent (1 seed);
  * vmapped seeds 1, 4, 16, 64, 256 at a fixed per-seed batch (``--envs-per-seed``,
    64 by default), reported as aggregate SPS over all seeds.
On a GPU, ``--max-envs 262144 --max-seeds 4096 --max-total-envs 262144`` adds
65536 and 262144 envs, and 1024 and 4096 seeds.
The 1-seed point of the seeds sweep is the 64-env point of the envs sweep (same
program), measured once and shown in both.

Configs: PPO is the CLI's CartPole config (``PPOConfig()``: 16 steps per env, 2
epochs x 16 minibatches, lr 2e-3) with only ``env`` and ``num_envs`` changed; GRPO
is ``GRPOConfig()`` (groups of 8, 8 epochs x 4 minibatches, outcome advantages,
rollouts in chunks of 50 up to the env's horizon: 500 on CartPole, 1000 on
Breakout) with only ``env`` and ``num_envs`` changed. The budget
(``total_timesteps``) is set far beyond what a point runs, so no run finishes and
the learning-rate schedule is flat.

Each point compiles the program the CLI runs (``runner.compile_job``: ``vmap(init)``
and the ``vmap(run_segment)`` that ``python -m jaxrl_po.train`` loops over; compile_s
is that ``.lower().compile()``), runs one update as a warm-up (untimed), then runs
segments of updates until ``--budget-s`` seconds have passed (at least one update),
each stopped by ``block_until_ready``. SPS = env steps executed / run seconds.
GRPO reports two rates: *executed* SPS counts every env step its rollouts ran
(alive steps + steps after an episode ended, up to the end of the chunk), *alive*
SPS counts the steps its budget counts. Aggregate over all seeds in the seeds sweep.

The ceiling (``random``): the same VecEnv with uniformly random actions and no
network, a ``fori_loop`` of batched auto-resetting steps (observations are carried,
so they are computed), at the same batch sizes and seed counts.

Points that would not fit are skipped, not run, and recorded with the reason:
  * seeds x envs per seed above ``--max-total-envs``;
  * XLA's memory estimate of the compiled segment (arguments + outputs + temporaries,
    ``Compiled.memory_analysis()``) above 80% of the free memory (GPU: the allocator's
    ``bytes_limit - bytes_in_use``; CPU: MemAvailable);
  * one update predicted (linearly in total envs, from the line's previous point)
    to take longer than ``--max-update-s``;
  * XLA running out of device memory while compiling (a GPU's autotuner runs kernels then);
    the reason quotes XLA's line. Out of memory later, while warming up or timing, ends the grid.

Writes ``benchmarks/results/scaling-<platform>[-quick].json`` (``--out``: a ``.json``
file; after every point, so a cut run keeps its points) and the plot beside it
(the same name, ``.png``), and prints a markdown table. ``--only`` runs some lines
(``ppo/CartPole-v1``, ``grpo/Breakout``, ``random``, ``Breakout`` ...: any
substring, case-insensitive; a line's env ceiling comes with it) and ``--sweep``
one sweep; the points of the other (sweep, line) pairs already in the output file
are kept, so a long grid can be run in parts (``--plot-only`` redraws the plot and
table from the file). A run that would replace lines already in the file (or the
whole file, when it is of the other kind, quick or full), or a ``.png`` that is
not the plot of the results it adds to, is refused before any work unless
``--overwrite`` is given.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmark_cli import (Parser, check_companion, check_json_out, kept_entries, path_argument,  # beside this script
                           replaced_held, save_results)
from jaxrl_po import GRPOConfig, GRPOOptions, PPOConfig, make_algorithm
from jaxrl_po.config import MAX_TIMESTEPS, to_dict, whole_number_argument
from jaxrl_po.envs import make_vec_env
from jaxrl_po.logs import NOT_RESULTS, replace_refusal, saved_entries, saved_record
from jaxrl_po.runner import compile_job, out_of_memory_text
from jaxrl_po.stop import exit_process, run_stoppable, waiting_for_xla
from jaxrl_po.sweep import make_runs
from jaxrl_po.timing import machine_info

ENVS = ("CartPole-v1", "Breakout-MinAtar")
ALGOS = ("ppo", "grpo")
# The grid runs up to DEFAULT_MAX_*; the larger points are for GPUs and run only when
# --max-envs / --max-seeds / --max-total-envs are raised to them.
NUM_ENVS = (64, 256, 1024, 4096, 16384, 65536, 262144)
SEEDS = (1, 4, 16, 64, 256, 1024, 4096)
DEFAULT_MAX_ENVS = 16384
DEFAULT_MAX_SEEDS = 256
QUICK_NUM_ENVS = (64, 256)
QUICK_SEEDS = (1, 4)
QUICK_LINES = ("ppo/CartPole-v1",)  # --quick without --only: a smoke run of one line (and its env's ceiling)
MEMORY_FRACTION = 0.8  # of the free memory a point may be estimated to need


# ---- configs -----------------------------------------------------------------------
def make_config(algo: str, env: str, num_envs: int, grpo_horizon: int | None):
    """The CLI default config of ``algo`` with ``env`` and ``num_envs`` changed and a budget no point reaches."""
    if algo == "ppo":
        config = PPOConfig(env=env, num_envs=num_envs)
        most = MAX_TIMESTEPS
    else:
        config = GRPOConfig(env=env, num_envs=num_envs, grpo=GRPOOptions(horizon=grpo_horizon))
        most = min(MAX_TIMESTEPS, 2**31 - 1 - config.most_steps_per_update())  # the last update may overrun
    return config.replace(total_timesteps=most // config.steps_per_update * config.steps_per_update)


# ---- measuring -----------------------------------------------------------------------
def free_bytes() -> int | None:
    """Memory a point may use: the default device's allocator headroom, or the host's MemAvailable."""
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def compiled_bytes(*compiled) -> int | None:
    """XLA's estimate of the memory a compiled program holds while it runs (the largest of ``compiled``)."""
    sizes = []
    for c in compiled:
        try:
            m = c.memory_analysis()
            sizes.append(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                         - m.alias_size_in_bytes)
        except Exception:  # noqa: BLE001 - not every backend reports it
            return None
    return max(sizes) if sizes else None


def too_big(estimate: int | None) -> str | None:
    free = free_bytes()
    if estimate is None or free is None or estimate <= MEMORY_FRACTION * free:
        return None
    return f"needs ~{estimate / 2**30:.1f} GiB (XLA estimate), {free / 2**30:.1f} GiB free"


def timed_loop(run_more, budget_s: float) -> tuple[float, int, list]:
    """Call ``run_more(n) -> (updates done, outputs)`` (blocking) until ``budget_s`` has passed.

    Each call's ``n`` is sized from the rate measured so far; returns (run_s, updates, outputs of each call).
    """
    run_s, done, outputs, per_update = 0.0, 0, [], None
    while run_s < budget_s or done == 0:
        n = 1 if per_update is None else int(np.clip((budget_s - run_s) / per_update, 1, 1_000_000))
        start = time.perf_counter()
        k, out = run_more(n)
        run_s += time.perf_counter() - start
        done += k
        outputs.append(out)
        per_update = run_s / max(done, 1)
    return run_s, done, outputs


def train_point(config, num_seeds: int, budget_s: float) -> dict:
    """Compile the CLI's segment program for ``num_seeds`` runs of ``config``, warm up, time ``budget_s``."""
    algo = make_algorithm(config)
    runs = make_runs(config, list(range(num_seeds)))
    try:
        init, segment, compile_s = compile_job(algo, runs.keys, runs.hparams)
    except jax.errors.JaxRuntimeError as error:  # XLA's GPU autotuner runs the kernels while compiling
        xla_says = out_of_memory_text(error)
        if xla_says is None:
            raise
        return {"compile_s": None, "memory_estimate_bytes": None,
                "skipped": f"out of device memory while compiling (XLA: {xla_says})"}
    estimate = compiled_bytes(init, segment)
    point = {"compile_s": compile_s, "memory_estimate_bytes": estimate}
    reason = too_big(estimate)
    if reason:
        return {**point, "skipped": reason}
    with waiting_for_xla():  # a first Ctrl-C lets XLA finish (see jaxrl_po.stop)
        state = jax.block_until_ready(init(runs.keys, runs.hparams))
    updates = 0

    def run_more(n):
        nonlocal state, updates
        with waiting_for_xla():
            state, rows = jax.block_until_ready(segment(state, runs.hparams, jnp.int32(updates + n)))
        rows = jax.device_get(rows)  # the CLI copies every segment's rows to the host too
        ran = np.asarray(rows.env_steps) > 0
        k = int(ran.sum(axis=1).max())
        updates += k
        if hasattr(rows, "padded_steps"):  # GRPO: steps per update vary
            alive = float(np.asarray(rows.alive_steps)[ran].sum())
            executed = alive + float(np.asarray(rows.padded_steps)[ran].sum())
        else:
            executed = alive = float(ran.sum() * config.steps_per_update)
        return k, (executed, alive)

    start = time.perf_counter()
    run_more(1)
    warmup_s = time.perf_counter() - start
    run_s, done, outputs = timed_loop(run_more, budget_s)
    executed = sum(o[0] for o in outputs)
    alive = sum(o[1] for o in outputs)
    del state
    return {**point, "skipped": None, "warmup_s": warmup_s, "run_s": run_s, "updates": done,
            "s_per_update": run_s / done, "env_steps": executed, "alive_env_steps": alive,
            "sps": executed / run_s, "alive_sps": alive / run_s}


def random_point(env_name: str, num_envs: int, num_seeds: int, budget_s: float) -> dict:
    """SPS of ``num_seeds`` x ``num_envs`` envs stepped with uniformly random actions, no network."""
    env = make_vec_env(env_name, num_envs)
    spec = env.action_spec

    def init(key):
        obs, state = env.reset(jax.random.split(key, num_envs))
        return state, obs, key, jnp.float32(0.0)

    def actions(key):
        if spec.discrete:
            return jax.random.randint(key, (num_envs,), 0, spec.num_actions)
        return jax.random.uniform(key, (num_envs,) + spec.shape, minval=spec.low, maxval=spec.high)

    def run(carry, n):
        def body(_, carry):
            state, _, key, total = carry
            key, action_key, step_key = jax.random.split(key, 3)
            out = env.step(jax.random.split(step_key, num_envs), state, actions(action_key))
            return out.state, out.obs, key, total + out.reward.sum()

        return jax.lax.fori_loop(0, n, body, carry)

    keys = jax.random.split(jax.random.key(0), num_seeds)
    start = time.perf_counter()
    with waiting_for_xla():  # a first Ctrl-C lets XLA finish (see jaxrl_po.stop)
        init_c = jax.jit(jax.vmap(init)).lower(keys).compile()
        run_c = jax.jit(jax.vmap(run, in_axes=(0, None)), donate_argnums=0).lower(
            init_c.out_info, jnp.int32(0)).compile()
    compile_s = time.perf_counter() - start
    estimate = compiled_bytes(run_c)
    reason = too_big(estimate)
    if reason:
        return {"compile_s": compile_s, "memory_estimate_bytes": estimate, "skipped": reason}
    carry = init_c(keys)

    def run_more(n):
        nonlocal carry
        with waiting_for_xla():
            carry = jax.block_until_ready(run_c(carry, jnp.int32(n)))
        return n, None

    # Steps, not updates: size the first timed call from a 16-step warm-up.
    start = time.perf_counter()
    run_more(16)
    warmup_s = time.perf_counter() - start
    run_s, steps, _ = timed_loop(run_more, budget_s)
    executed = float(steps) * num_envs * num_seeds
    return {"compile_s": compile_s, "memory_estimate_bytes": estimate, "skipped": None, "warmup_s": warmup_s,
            "run_s": run_s, "updates": None, "env_steps": executed, "alive_env_steps": executed,
            "sps": executed / run_s, "alive_sps": executed / run_s}


# ---- the grid ---------------------------------------------------------------------------
def line_name(algo: str, env: str) -> str:
    return f"{algo}/{env}"


def selected(name: str, only: list[str] | None) -> bool:
    return only is None or any(s.lower() in name.lower() for s in only)


def plan(args, lines: list[tuple[str, str]], envs: list[str]) -> list[dict]:
    """Every (sweep, line, seeds, envs per seed) to measure, envs sweep first, then seeds, ceilings first."""
    todo = []
    for sweep, grid in (("num_envs", args.num_envs), ("seeds", args.seeds)):
        if args.sweep not in ("both", "envs" if sweep == "num_envs" else "seeds"):
            continue
        for env in envs:
            for algo in ["random"] + [a for a, e in lines if e == env]:
                for x in grid:
                    seeds, per_seed = (1, x) if sweep == "num_envs" else (x, args.envs_per_seed)
                    todo.append({"sweep": sweep, "line": line_name(algo, env), "algo": algo, "env": env,
                                 "num_seeds": seeds, "num_envs_per_seed": per_seed, "total_envs": seeds * per_seed})
    return todo


def measure(args, item: dict, done: dict, last: dict) -> dict:
    """Measure one planned point (reusing an identical one already measured); returns the point's record."""
    key = (item["line"], item["num_seeds"], item["num_envs_per_seed"])
    if key in done:
        record = {**item, **{k: v for k, v in done[key].items() if k not in item}, "same_as": done[key]["sweep"]}
        if not record.get("skipped"):
            last[(item["sweep"], item["line"])] = record
        return record
    if item["total_envs"] > args.max_total_envs:
        return {**item, "skipped": f"seeds x envs = {item['total_envs']} > --max-total-envs {args.max_total_envs}"}
    prev = last.get((item["sweep"], item["line"]))
    if prev and prev.get("s_per_update") and item["algo"] != "random":
        predicted = prev["s_per_update"] * item["total_envs"] / prev["total_envs"]
        if predicted > args.max_update_s:
            return {**item, "skipped": f"one update predicted to take {predicted:.0f} s > --max-update-s "
                                       f"{args.max_update_s:g} (from {prev['total_envs']} envs)"}
    if item["algo"] == "random":
        result = random_point(item["env"], item["num_envs_per_seed"], item["num_seeds"], args.budget_s)
    else:
        config = make_config(item["algo"], item["env"], item["num_envs_per_seed"], args.grpo_horizon)
        result = train_point(config, item["num_seeds"], args.budget_s)
    gc.collect()
    record = {**item, **result, "budget_s": args.budget_s}
    done[key] = record
    if not record.get("skipped"):
        last[(item["sweep"], item["line"])] = record
    return record


def point_order(p: dict) -> tuple:
    """Table order: sweep, env, random / ppo / grpo, then batch."""
    algos = ("random",) + ALGOS
    return (("num_envs", "seeds").index(p["sweep"]), ENVS.index(p["env"]) if p["env"] in ENVS else len(ENVS),
            algos.index(p["algo"]) if p["algo"] in algos else len(algos), p["num_seeds"], p["num_envs_per_seed"])


def attach_ceiling(points: list[dict]) -> None:
    """Add each training point's random-policy SPS at the same batch and its fraction of it."""
    ceiling = {(p["sweep"], p["env"], p["total_envs"], p["num_seeds"]): p.get("sps")
               for p in points if p["algo"] == "random" and not p.get("skipped")}
    for p in points:
        if p["algo"] == "random":
            continue
        c = ceiling.get((p["sweep"], p["env"], p["total_envs"], p["num_seeds"]))
        p["random_sps"] = c
        p["fraction_of_random"] = p["sps"] / c if c and p.get("sps") else None


# ---- output ---------------------------------------------------------------------------


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(points: list[dict]) -> str:
    lines = []
    for sweep, title, x_name in (("num_envs", "SPS vs num_envs (1 seed)", "envs"),
                                 ("seeds", "aggregate SPS vs vmapped seeds", "seeds x envs")):
        rows = [p for p in points if p["sweep"] == sweep]
        if not rows:
            continue
        lines += [f"**{title}**", "",
                  f"| env | algo | {x_name} | compile s | updates | run s | SPS (executed) | alive SPS "
                  "| random-policy SPS | of random |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in rows:
            x = str(p["num_envs_per_seed"]) if sweep == "num_envs" else f"{p['num_seeds']} x {p['num_envs_per_seed']}"
            if p.get("skipped"):
                lines.append(f"| {p['env']} | {p['algo']} | {x} | {fmt(p.get('compile_s'), '.1f')} "
                             f"| skipped: {p['skipped']} | | | | | |")
                continue
            alive = fmt(p["alive_sps"]) if p["algo"] == "grpo" else ""
            frac = fmt(p.get("fraction_of_random"), ".1%") if p["algo"] != "random" else ""
            ceiling = fmt(p.get("random_sps")) if p["algo"] != "random" else ""
            lines.append(f"| {p['env']} | {p['algo']} | {x} | {p['compile_s']:.1f} | {fmt(p['updates'], 'd')} "
                         f"| {p['run_s']:.2f} | {p['sps']:,.0f} | {alive} | {ceiling} | {frac} |")
        lines.append("")
    return "\n".join(lines)


COLORS = {("ppo", "CartPole-v1"): "tab:blue", ("grpo", "CartPole-v1"): "tab:cyan",
          ("ppo", "Breakout-MinAtar"): "tab:red", ("grpo", "Breakout-MinAtar"): "tab:orange",
          ("random", "CartPole-v1"): "navy", ("random", "Breakout-MinAtar"): "darkred"}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    points = [p for p in results["points"] if not p.get("skipped")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4))
    panels = (("num_envs", "num_envs_per_seed", "num_envs (1 seed)", "env steps / s"),
              ("seeds", "num_seeds", f"vmapped seeds ({results['settings']['envs_per_seed']} envs each)",
               "aggregate env steps / s"))
    for ax, (sweep, x_key, xlabel, ylabel) in zip(axes, panels):
        lines = sorted({(p["algo"], p["env"]) for p in points if p["sweep"] == sweep},
                       key=lambda l: (l[1], ALGOS.index(l[0]) if l[0] in ALGOS else -1))
        for algo, env in lines:
            pts = sorted((p for p in points if p["sweep"] == sweep and p["algo"] == algo and p["env"] == env),
                         key=lambda p: p[x_key])
            x = [p[x_key] for p in pts]
            color = COLORS.get((algo, env))
            if algo == "random":
                ax.plot(x, [p["sps"] for p in pts], "--", color=color, lw=1.3, label=f"random policy, {env}")
            else:
                label = f"{algo.upper()}, {env}" + (" (executed)" if algo == "grpo" else "")
                ax.plot(x, [p["sps"] for p in pts], "-o", color=color, ms=4, label=label)
                if algo == "grpo":
                    ax.plot(x, [p["alive_sps"] for p in pts], ":", marker=".", color=color,
                            label=f"GRPO, {env} (alive)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({p[x_key] for p in points if p["sweep"] == sweep})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8, frameon=False)
    m = results["machine"]
    where = m["device"] if m["platform"] != "cpu" else f"{m.get('model_name', m['processor'])}, {m['cpus']} CPUs"
    fig.suptitle(f"jaxrl_po scaling on {where} (jax {m['jax']})" + (" - QUICK smoke run" if results["quick"] else ""),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- main ---------------------------------------------------------------------------
POINT_FIELDS = ("sweep", "line", "algo", "env", "num_seeds", "num_envs_per_seed")  # what the plot and table read


def plot_only(parser: Parser, out: Path, png: Path) -> None:
    """``--plot-only``: redraw the plot and table of the results at ``out``; a file that is not such results is
    refused with one line (it used to end in a traceback)."""
    if not out.is_file():
        parser.error(f"--plot-only: no results at {out}; run without --plot-only first (or pass --out)")
    results = saved_record(out)
    points = saved_entries(results, "points", POINT_FIELDS)
    readable = points and "quick" in results and all(isinstance(results.get(k), dict) for k in ("machine", "settings"))
    if not readable:
        parser.error(f"--out: {out} holds {NOT_RESULTS}: nothing to plot")
    check_companion(parser, png, "plot", redrawn=True, overwrite=False)  # their own plot: only a directory is refused
    results["points"] = sorted(points, key=point_order)
    plot(results, png)
    print(markdown(results["points"]))
    print(f"wrote {png}")


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--out", type=path_argument, default=None,
                        help="a .json file (default benchmarks/results/scaling-<platform>[-quick].json)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run (numbers meaningless): num_envs {QUICK_NUM_ENVS}, seeds {QUICK_SEEDS}, "
                             f"0.3 s per point, --max-update-s 3, only {', '.join(QUICK_LINES)} unless --only is given")
    parser.add_argument("--only", nargs="*", default=None,
                        help="lines to run: substrings of 'ppo/CartPole-v1', 'grpo/Breakout-MinAtar', 'random/...'")
    parser.add_argument("--sweep", choices=("both", "envs", "seeds"), default="both")
    parser.add_argument("--budget-s", type=float, default=None, help="timed seconds per point (default 2, quick 0.3)")
    parser.add_argument("--max-envs", type=whole_number_argument, default=DEFAULT_MAX_ENVS,
                        help=f"largest num_envs of the envs sweep, from {NUM_ENVS} (default {DEFAULT_MAX_ENVS})")
    parser.add_argument("--max-seeds", type=whole_number_argument, default=DEFAULT_MAX_SEEDS,
                        help=f"most seeds of the seeds sweep, from {SEEDS} (default {DEFAULT_MAX_SEEDS})")
    parser.add_argument("--max-total-envs", type=whole_number_argument, default=DEFAULT_MAX_ENVS,
                        help=f"skip points with seeds x envs per seed above this (default {DEFAULT_MAX_ENVS})")
    parser.add_argument("--envs-per-seed", type=whole_number_argument, default=64,
                        help="per-seed batch of the seeds sweep")
    parser.add_argument("--max-update-s", type=float, default=None,
                        help="skip points whose one update is predicted to take longer (seconds; default 20, quick 3)")
    parser.add_argument("--grpo-horizon", type=whole_number_argument, default=None,
                        help="GRPO episode horizon (default: the env's, 500 CartPole / 1000 Breakout)")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot and table from the JSON")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the lines at --out that this run re-runs (the whole file if it is of the other "
                             "kind, quick or full), and a .png beside it that is not its plot")
    args = parser.parse_args()
    platform_name = jax.devices()[0].platform
    out = Path(args.out or f"benchmarks/results/scaling-{platform_name}{'-quick' if args.quick else ''}.json")
    check_json_out(parser, out, written=not args.plot_only)
    png = out.with_suffix(".png")
    if args.plot_only:
        plot_only(parser, out, png)
        return

    if args.budget_s is None:
        args.budget_s = 0.3 if args.quick else 2.0
    if args.max_update_s is None:
        args.max_update_s = 3.0 if args.quick else 20.0
    args.num_envs = [n for n in (QUICK_NUM_ENVS if args.quick else NUM_ENVS) if n <= args.max_envs]
    args.seeds = [s for s in (QUICK_SEEDS if args.quick else SEEDS) if s <= args.max_seeds]
    only = args.only if args.only else (list(QUICK_LINES) if args.quick else None)
    lines = [(a, e) for e in ENVS for a in ALGOS if selected(line_name(a, e), only)]
    envs = [e for e in ENVS if any(le == e for _, le in lines) or selected(line_name("random", e), only)]
    if not envs:
        names = ", ".join(line_name(a, e) for e in ENVS for a in ("random", *ALGOS))
        parser.error(f"--only: {' '.join(only)} matches no line; the lines are {names}")
    for name, value in (("--budget-s", args.budget_s), ("--max-update-s", args.max_update_s),
                        ("--max-envs", args.max_envs), ("--max-seeds", args.max_seeds),
                        ("--max-total-envs", args.max_total_envs), ("--envs-per-seed", args.envs_per_seed)):
        if value <= 0:
            parser.error(f"{name}: must be positive, got {value}")
    if args.grpo_horizon is not None and args.grpo_horizon < 1:
        parser.error(f"--grpo-horizon: must be positive, got {args.grpo_horizon}")
    todo = plan(args, lines, envs)
    previous = saved_record(out)
    ran = {(p["sweep"], p["line"]) for p in todo}
    kept = kept_entries(previous, args.quick, "points", ("sweep", "line"))
    replaced = sorted({f"{p['line']} ({p['sweep']} sweep)" for p in kept if (p["sweep"], p["line"]) in ran})
    held = None if args.overwrite else replaced_held(previous, args.quick, kept, replaced, "line")
    if held:  # adding lines is fine; replacing one needs --overwrite
        parser.error(replace_refusal("--out", out, held, max(len(replaced), 1), record=previous))
    check_companion(parser, png, "plot", redrawn=bool(kept), overwrite=args.overwrite)

    templates = {algo: to_dict(make_config(algo, "CartPole-v1", 1024 if algo == "ppo" else 128, args.grpo_horizon))
                 for algo in ALGOS}
    results = {
        "machine": machine_info(), "quick": args.quick,
        "settings": {
            "budget_s": args.budget_s, "num_envs_grid": args.num_envs, "seeds_grid": args.seeds,
            "envs_per_seed": args.envs_per_seed, "max_total_envs": args.max_total_envs,
            "max_update_s": args.max_update_s, "grpo_horizon": args.grpo_horizon,
            "configs": templates,
            "notes": ("Configs: the CLI defaults with env and num_envs changed (total_timesteps raised so no run "
                      "finishes). The envs sweep is 1 seed; the seeds sweep has envs_per_seed envs per seed and "
                      "reports aggregate SPS over all seeds. sps counts every env step executed (GRPO: alive + "
                      "padded); alive_sps counts GRPO's budgeted steps. random: uniformly random actions, no "
                      "network. compile_s: init + segment .lower().compile() (the CLI's programs). GRPO's "
                      "update runs SGD over num_envs x horizon steps (masked after each episode ends) whatever "
                      "the episodes' lengths, and these points time the first updates of an untrained policy "
                      "(short episodes): its SPS, alive SPS above all, grows as episodes get longer."),
        },
        "points": [],
    }
    results["points"] = [p for p in kept if (p["sweep"], p["line"]) not in ran]  # the lines not re-run

    done: dict = {}
    last: dict = {}
    start = time.perf_counter()
    for item in todo:
        x = f"{item['num_seeds']} seed(s) x {item['num_envs_per_seed']} envs"
        print(f"[{time.perf_counter() - start:7.1f} s] {item['line']} ({item['sweep']} sweep): {x}", flush=True)
        point = measure(args, item, done, last)
        results["points"].append(point)
        if point.get("skipped"):
            print(f"    skipped: {point['skipped']}", flush=True)
        else:
            alive = f", alive {point['alive_sps']:,.0f}" if point["algo"] == "grpo" else ""
            print(f"    compile {point['compile_s']:.1f} s, {point['updates'] or ''}"
                  f"{' updates in ' if point['updates'] else ''}{point['run_s']:.2f} s: "
                  f"{point['sps']:,.0f} SPS{alive}", flush=True)
        attach_ceiling(results["points"])
        results["points"].sort(key=point_order)
        results["wall_s"] = time.perf_counter() - start
        save_results(out, results)
    plot(results, png)
    print()
    print(markdown(results["points"]))
    print(f"total wall time {results['wall_s']:.1f} s; wrote {out} and {png}")


if __name__ == "__main__":
    exit_process(run_stoppable(main))
