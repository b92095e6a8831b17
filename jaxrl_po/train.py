"""Command line: ``python -m jaxrl_po.train --algo ppo [flags]``.

parse -> validate (one-line errors, exit 2) -> build -> compile -> run all seeds
in one ``jit(vmap(train))`` call with a live progress line -> write the run
directory -> print the table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from jaxrl_po.config import BaseConfig, ConfigError, PPOConfig, to_dict

ALGOS = ("ppo", "grpo")


def algorithm(name: str):
    """(config class, make_train) of an algorithm."""
    if name == "ppo":
        from jaxrl_po.ppo import make_train

        return PPOConfig, make_train
    if name == "grpo":
        from jaxrl_po.config import GRPOConfig
        from jaxrl_po.grpo import make_train

        return GRPOConfig, make_train
    raise ConfigError("algo", f"unknown algorithm {name!r}; valid: {', '.join(ALGOS)}")


@dataclass(frozen=True)
class RunOptions:
    """How to run: which algorithm, how many seeds, where to write."""

    algo: Literal["ppo", "grpo"] = "ppo"
    """algorithm to train."""
    num_seeds: int = 4
    """seeds trained at once in one vmapped, compiled call."""
    seed: int = 0
    """first seed; run i uses seed + i (so any run can be reproduced alone)."""
    run_dir: str | None = None
    """output directory (default runs/<algo>-<env>-<timestamp>); must not exist or be empty."""
    progress: bool = True
    """show the live progress line."""


def cli_type(config_cls: type[BaseConfig]) -> type:
    """The tyro dataclass for one algorithm: run options plus its config flags, unprefixed."""

    config_field = (
        "config",
        Annotated[config_cls, tyro.conf.arg(name="")],
        field(default_factory=config_cls),
    )
    Args = dataclasses.make_dataclass("Args", [config_field], bases=(RunOptions,), frozen=True)
    Args.__doc__ = f"Train {config_cls.__name__.removesuffix('Config')} on a gymnax environment."
    return Args


class UsageError(Exception):
    """A bad command line; reported as one line, exit code 2."""


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def parse(argv: list[str]) -> tuple[RunOptions, BaseConfig]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", default="ppo")
    known, _ = pre.parse_known_args(argv)
    try:
        config_cls, _ = algorithm(known.algo)
    except ConfigError as err:
        raise UsageError(f"{flag_name(err.field)}: {str(err).split(': ', 1)[1]}") from None
    args = _tyro_cli(cli_type(config_cls), argv)
    options = RunOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions)})
    return options, args.config


def _tyro_cli(cls: type, argv: list[str]):
    """tyro.cli, but its boxed error message is condensed to one line."""
    if "-h" in argv or "--help" in argv:
        return tyro.cli(cls, args=argv)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return tyro.cli(cls, args=argv, console_outputs=False)
    except SystemExit as exit_:
        if exit_.code == 0:
            sys.stdout.write(captured.getvalue())
            raise
        raise UsageError(_one_line(captured.getvalue()) or f"invalid arguments: {' '.join(argv)}") from None


def _one_line(message: str) -> str:
    """The first message line of a tyro/argparse error, without box drawing."""
    lines = [re.sub(r"[│╭╮╰╯─]+", " ", line).strip() for line in message.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("usage:", "For full helptext"))]
    text = " ".join(lines[:3])
    return re.sub(r"\s+", " ", text).strip()


def seeds_of(options: RunOptions) -> list[int]:
    return [options.seed + i for i in range(options.num_seeds)]


def validate(options: RunOptions, config: BaseConfig) -> None:
    if not isinstance(options.num_seeds, int) or options.num_seeds < 1:
        raise ConfigError("num_seeds", f"must be a positive integer, got {options.num_seeds!r}")
    if options.seed < 0:
        raise ConfigError("seed", f"must be >= 0, got {options.seed}")
    config.validate()


def default_run_dir(options: RunOptions, config: BaseConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{options.algo}-{config.env}-{stamp}"


def run(options: RunOptions, config: BaseConfig, run_dir: Path) -> dict[str, Any]:
    """Train ``options.num_seeds`` seeds in one compiled call; write the run directory."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from rich.console import Console

    from jaxrl_po import logs

    console = Console()
    _, make_train = algorithm(options.algo)
    seeds = seeds_of(options)
    logs.write_json(run_dir / "config.json", {"algo": options.algo, "seeds": seeds, **to_dict(config)})

    progress = logs.Progress(options.num_seeds, config.total_timesteps)
    train = make_train(config, callback=progress if options.progress else None)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    run_ids = jnp.arange(options.num_seeds)

    console.print(
        f"[bold]{options.algo.upper()}[/] on {config.env}: {options.num_seeds} seed(s) x "
        f"{config.total_timesteps:,} env steps each on {jax.devices()[0].platform}; compiling..."
    )
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(train)).lower(keys, None, run_ids).compile()
    compile_s = time.perf_counter() - start
    progress.begin()
    start = time.perf_counter()
    output = jax.block_until_ready(compiled(keys, None, run_ids))
    train_s = time.perf_counter() - start

    metrics = jax.tree_util.tree_map(np.asarray, output.metrics)
    logs.write_metrics_csv(run_dir / "metrics.csv", metrics, seeds)
    per_seed = logs.final_returns(metrics.episode_return, metrics.env_steps)
    finite = per_seed[~np.isnan(per_seed)]
    steps_per_seed = metrics.env_steps.max(axis=1)  # env steps (GRPO: alive steps) each seed took
    total_steps = int(steps_per_seed.sum())
    summary = {
        "algo": options.algo,
        "env": config.env,
        "num_seeds": options.num_seeds,
        "seeds": seeds,
        "final_return_mean": logs.none_if_nan(float(finite.mean())) if finite.size else None,
        "final_return_std": float(finite.std()) if finite.size else None,
        "final_return_per_seed": [logs.none_if_nan(float(x)) for x in per_seed],
        "total_timesteps": int(steps_per_seed.max()),
        "total_env_steps": total_steps,
        "num_updates": int((metrics.env_steps > 0).sum(axis=1).max()),
        "sps": total_steps / train_s,
        "compile_s": compile_s,
        "train_s": train_s,
        "total_s": compile_s + train_s,
        "device": str(jax.devices()[0].device_kind),
        "run_dir": str(run_dir),
    }
    if hasattr(metrics, "padded_steps"):  # GRPO: env steps run after episodes ended
        summary["padded_env_steps"] = int(np.nansum(metrics.padded_steps))
    logs.write_json(run_dir / "summary.json", summary)
    logs.print_summary(console, summary, seeds)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options, config = parse(argv)
        validate(options, config)
        run_dir = Path(options.run_dir) if options.run_dir else default_run_dir(options, config)
        try:
            from jaxrl_po.logs import make_run_dir

            run_dir = make_run_dir(run_dir)
        except OSError as err:
            raise ConfigError("run_dir", f"cannot use {run_dir}: {err.strerror or err}") from None
    except ConfigError as err:
        print(f"error: {flag_name(err.field)}: {str(err).split(': ', 1)[1]}", file=sys.stderr)
        return 2
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run(options, config, run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
