"""Throughput of the PPO trainer, compile time apart from run time.

    python benchmarks/throughput.py [--out benchmarks/results/throughput-cpu.json] [--quick] [--overwrite]

Cases (CartPole-v1, PPO with PureJaxRL's CartPole settings: 4 epochs x 4 minibatches,
64-64 tanh MLPs, lr 2.5e-4 annealed, ent 0.01, value loss clipped):
  1 seed,  4 envs x 128 steps, 5e5 steps per seed
  16 seeds vmapped, same config
  1 seed,  2048 envs x 128 steps, 1e7 steps
``--quick`` runs a tenth of each budget. A case's label (its key in the JSON) is made from
what it runs, budget included: ``1 seed, 4 envs x 128, 5e5 steps``, or ``5e4 steps`` with ``--quick``.
For each: compile s (``.lower().compile()``), run s (``block_until_ready``), SPS,
final return. The limits printed beside them: the same number of env steps
rolled out with the same network and no learning, and the FLOP rate of a
64-wide dense layer on this machine with the fraction of it the trainer reaches.

Runs are laid out as the CLI lays them out: on a CPU host split into one JAX
device per core (``train.split_cpu``), seeds are spread over the cores, so the
16-seed case runs 8 seeds per core on 2 cores; it is also timed on one device
(as ``jax.jit(jax.vmap(train))`` without a mesh runs) for comparison. Where the CLI's layout
is one device already (one GPU), that case would repeat the run before it, and is not run again.

Results already at ``--out`` (a ``.json`` file) are replaced only with ``--overwrite``
(refused before any work).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

from benchmark_cli import Parser, check_json_out, path_argument, save_results  # beside this script
from jaxrl_po.config import whole_number_argument
from jaxrl_po.train import split_cpu_or_exit

# One JAX device per core, exactly as the CLI makes them (respecting --cpu-devices and a device
# count the user fixed); before the imports below start the backend (gymnax creates arrays).
CORES_SPLIT = split_cpu_or_exit(sys.argv[1:])

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxrl_po import PPOConfig, make_train  # noqa: E402
from jaxrl_po.envs import make_vec_env  # noqa: E402
from jaxrl_po.layout import Layout  # noqa: E402
from jaxrl_po.logs import NOT_RESULTS, final_returns, replace_refusal, saved_record  # noqa: E402
from jaxrl_po.networks import make_policy  # noqa: E402
from jaxrl_po.rollout import init_env_carry, rollout  # noqa: E402
from jaxrl_po.runner import job_layout  # noqa: E402
from jaxrl_po.stop import exit_process, run_stoppable  # noqa: E402
from jaxrl_po.timing import compile_then_run, compile_then_run_over_devices, machine_info  # noqa: E402

# PureJaxRL's ppo.py CartPole config, which the baseline ran; it clips the value loss.
BASE = PPOConfig(
    env="CartPole-v1", num_envs=4, num_steps=128, update_epochs=4, num_minibatches=4,
    total_timesteps=500_000, lr=2.5e-4, ent_coef=0.01, clip_value_loss=True,
)
# (config, seeds, devices): devices None = as the CLI chooses (one seed per core at most), else that many.
# Each case's label is case_label's, made from these so that it states the budget actually run.
CASES = (
    (BASE, 1, None),
    (BASE, 16, None),
    (BASE, 16, 1),
    (BASE.replace(num_envs=2048, total_timesteps=10_000_000), 1, None),
)
QUICK_FRACTION = 10  # --quick runs 1/10 of each case's budget


def steps_text(steps: int) -> str:
    """500_000 -> "5e5", 1_500_000 -> "1.5e6"; a count that short form would round stays whole: "1,234,567"."""
    short = f"{steps:.3g}".replace("e+0", "e").replace("e+", "e")
    return short if float(short) == steps else f"{steps:,}"


def case_label(config: PPOConfig, num_seeds: int, devices: int | None) -> str:
    """"16 seeds vmapped, 4 envs x 128, 1 device, 5e5 steps each": what the case runs, made from its
    config so that the budget it states is the one run (a tenth of the full one with --quick)."""
    seeds = "1 seed" if num_seeds == 1 else f"{num_seeds} seeds vmapped"
    where = "" if devices is None else f", {devices} device" + ("s" if devices != 1 else "")
    budget = f"{steps_text(config.total_timesteps)} steps" + (" each" if num_seeds > 1 else "")
    return f"{seeds}, {config.num_envs} envs x {config.num_steps}{where}, {budget}"


def run_config(config: PPOConfig, quick: bool) -> PPOConfig:
    """The case's config as run: its budget cut to 1/QUICK_FRACTION for ``--quick``."""
    return config.replace(total_timesteps=config.total_timesteps // QUICK_FRACTION) if quick else config


def train_case(config: PPOConfig, num_seeds: int, layout: Layout) -> dict:
    keys = jax.random.split(jax.random.key(0), num_seeds)
    out, compile_s, run_s = compile_then_run_over_devices(make_train(config), keys, layout)
    steps = config.num_updates * config.steps_per_update * num_seeds
    finals = final_returns(np.asarray(out.metrics.episode_return), np.asarray(out.metrics.env_steps))
    return {"compile_s": compile_s, "run_s": run_s, "sps": steps / run_s, "env_steps": steps,
            "final_return_mean": float(np.nanmean(finals))}


def rollout_only_case(config: PPOConfig, num_seeds: int, layout: Layout) -> dict:
    """The same env steps and actor network, no learning: the trainer's ceiling."""
    env = make_vec_env(config.env, config.num_envs)
    policy = make_policy(env.action_spec, config.hidden_sizes, config.activation)

    def collect(key):
        params = policy.init(key, env.obs_dim)
        carry = init_env_carry(key, env, normalize_obs=False)

        def one_update(carry, k):
            carry, traj = rollout(k, carry, params, policy, env, config.num_steps, False, False, 0.99)
            return carry, traj.reward.sum()

        return jax.lax.scan(one_update, carry, jax.random.split(key, config.num_updates))[1].sum()

    keys = jax.random.split(jax.random.key(1), num_seeds)
    _, compile_s, run_s = compile_then_run_over_devices(collect, keys, layout)
    steps = config.num_updates * config.steps_per_update * num_seeds
    return {"compile_s": compile_s, "run_s": run_s, "sps": steps / run_s}


def dense_flop_rate(batch: int = 4096, width: int = 64, iters: int = 2000) -> float:
    """FLOP/s of tanh(x @ W) with a width x width W, repeated (the MLPs' building block)."""
    w = jax.random.normal(jax.random.key(0), (width, width)) / np.sqrt(width)
    x = jax.random.normal(jax.random.key(1), (batch, width))
    body = lambda x, _: (jnp.tanh(x @ w), None)
    fn = lambda x: jax.lax.scan(body, x, None, length=iters)[0]
    _, _, run_s = compile_then_run(fn, x)
    return 2.0 * batch * width * width * iters / run_s


def train_flops_per_step(config: PPOConfig, obs_dim: int = 4, actions: int = 2) -> float:
    """Dense-layer FLOPs per env step: actor forward in the rollout, two critic
    forwards for GAE, and per epoch a forward + backward (~3x) of actor and critic."""
    h = config.hidden_sizes
    layers = lambda out: sum(2 * a * b for a, b in zip((obs_dim,) + h, h + (out,)))
    actor, critic = layers(actions), layers(1)
    return actor + 2 * critic + config.update_epochs * 3 * (actor + critic)


def main() -> None:
    parser = Parser(description=__doc__)
    parser.add_argument("--out", type=path_argument,
                        help="a .json file (default: benchmarks/results/throughput-<platform>[-quick].json)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_FRACTION}x smaller budgets (a smoke run)")
    parser.add_argument("--cpu-devices", type=whole_number_argument,
                        help="JAX devices the CPU is split into, as the CLI's flag (default: one per core)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results already at --out")
    args = parser.parse_args()
    quick = "-quick" if args.quick else ""  # a smoke run never replaces the full results
    out = Path(args.out or f"benchmarks/results/throughput-{jax.devices()[0].platform}{quick}.json")
    check_json_out(parser, out)
    previous = None if args.overwrite else saved_record(out)
    if previous is not None:
        cases = previous.get("cases")
        held = f"a run of {len(cases)} cases" if isinstance(cases, dict) else NOT_RESULTS
        parser.error(replace_refusal("--out", out, held, record=previous))

    flop_rate = dense_flop_rate()
    results = {
        "machine": machine_info(),
        "dense64_flops_per_s": flop_rate,
        "cases": {},
    }
    runs = [(run_config(config, args.quick), seeds, devices) for config, seeds, devices in CASES]
    names = [case_label(*run) for run in runs]
    width = max(map(len, ["case", *names])) + 2
    print(f"{'case':<{width}}{'devices':>8}{'compile s':>10}{'run s':>8}{'SPS':>12}{'rollout-only SPS':>18}"
          f"{'of ceiling':>11}{'FLOP/s':>10}{'of dense':>9}{'return':>8}")
    timed = {}  # (config, seeds, layout) -> the case that ran it: on one device, "1 device" repeats a case
    for name, (config, seeds, devices) in zip(names, runs):
        layout = job_layout(config, seeds, None, CORES_SPLIT) if devices is None else Layout(devices, 1)
        devices = layout.devices
        if (config, seeds, layout) in timed:
            print(f"{name:<{width}}{devices:>8}  the same run as '{timed[config, seeds, layout]}' here: not repeated")
            continue
        timed[config, seeds, layout] = name
        train = train_case(config, seeds, layout)
        ceiling = rollout_only_case(config, seeds, layout)
        flops = train["sps"] * train_flops_per_step(config)
        row = {"num_seeds": seeds, "devices": devices, "num_envs": config.num_envs, "num_steps": config.num_steps,
               "total_timesteps_per_seed": config.total_timesteps, **train,
               "rollout_only": ceiling, "fraction_of_rollout_only": train["sps"] / ceiling["sps"],
               "train_flops_per_s": flops, "fraction_of_dense_flop_rate": flops / flop_rate}
        results["cases"][name] = row
        print(f"{name:<{width}}{devices:>8}{train['compile_s']:>10.1f}{train['run_s']:>8.2f}{train['sps']:>12,.0f}"
              f"{ceiling['sps']:>18,.0f}{row['fraction_of_rollout_only']:>11.0%}{flops / 1e9:>9.2f}G"
              f"{row['fraction_of_dense_flop_rate']:>9.1%}{train['final_return_mean']:>8.1f}")
    print(f"dense 64-wide layer: {flop_rate / 1e9:.2f} GFLOP/s")
    save_results(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    exit_process(run_stoppable(main))
