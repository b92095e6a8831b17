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
    sweep: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """sweep a traced hyperparameter, e.g. --sweep lr=1e-4,3e-4 (repeat for a grid; one compiled call)."""
    compile_cache: bool = True
    """keep compiled programs in a persistent cache so an identical run starts without compiling."""
    compile_cache_dir: str = "~/.cache/jaxrl_po/xla"
    """where the compile cache lives."""


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
    args = _tyro_cli(cli_type(config_cls), argv, known.algo)
    options = RunOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions)})
    return options, args.config


def _tyro_cli(cls: type, argv: list[str], algo: str):
    """tyro.cli, but its boxed error message is condensed to one line."""
    kwargs = dict(args=argv, default=cls(algo=algo), prog="python -m jaxrl_po.train")
    if "-h" in argv or "--help" in argv:
        return tyro.cli(cls, **kwargs)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return tyro.cli(cls, **kwargs)
    except SystemExit as exit_:
        if exit_.code == 0:
            sys.stdout.write(captured.getvalue())
            raise
        raise UsageError(_one_line(captured.getvalue()) or f"invalid arguments: {' '.join(argv)}") from None


def _one_line(message: str) -> str:
    """The message of a tyro error box: the lines between its title and the help pointers."""
    lines = [re.sub(r"[│╭╮╰╯─━┃]+", " ", line).strip() for line in message.splitlines()]
    lines = [line for line in lines if line and not re.fullmatch(r"[-\s]+", line)]
    body = []
    for line in lines[1:]:  # lines[0] is the box title ("Invalid choice", "Value error", ...)
        if line.startswith(("Argument helptext", "For full helptext", "usage:")):
            break
        body.append(line)
    return re.sub(r"\s+", " ", " ".join(body)).strip()


def seeds_of(options: RunOptions) -> list[int]:
    return [options.seed + i for i in range(options.num_seeds)]


def validate(options: RunOptions, config: BaseConfig) -> dict[str, list[float]]:
    """Check everything before compiling; returns the sweep grid (name -> values)."""
    from jaxrl_po.sweep import check_grid, parse_sweep_spec

    if not isinstance(options.num_seeds, int) or options.num_seeds < 1:
        raise ConfigError("num_seeds", f"must be a positive integer, got {options.num_seeds!r}")
    if options.seed < 0:
        raise ConfigError("seed", f"must be >= 0, got {options.seed}")
    config.validate()
    grid = dict(parse_sweep_spec(spec) for spec in options.sweep)
    check_grid(config, grid)
    return grid


def default_run_dir(options: RunOptions, config: BaseConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{options.algo}-{config.env}-{stamp}"


def enable_compile_cache(directory: str) -> None:
    """Persist compiled programs (JAX's compilation cache) so a repeated run skips compiling."""
    import jax

    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run(
    options: RunOptions, config: BaseConfig, run_dir: Path, grid: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """Train every (swept config, seed) pair in one compiled call; write the run directory."""
    import jax
    import numpy as np
    from rich.console import Console

    from jaxrl_po import logs
    from jaxrl_po.sweep import make_runs, rank_configs, shard_runs
    from jaxrl_po.timing import compile_then_run

    console = Console()
    if options.compile_cache:
        enable_compile_cache(options.compile_cache_dir)
    _, make_train = algorithm(options.algo)
    runs = make_runs(config, seeds_of(options), grid)
    num_runs = len(runs.seeds)
    logs.write_json(
        run_dir / "config.json",
        {"algo": options.algo, "seeds": seeds_of(options), "sweep": grid or {}, **to_dict(config)},
    )

    progress = logs.Progress(num_runs, config.total_timesteps)
    train = make_train(config, callback=progress if options.progress else None)
    args, num_devices = shard_runs(runs)
    grid_text = f" x {num_runs // options.num_seeds} configs" if grid else ""
    console.print(
        f"[bold]{options.algo.upper()}[/] on {config.env}: {options.num_seeds} seed(s){grid_text}, "
        f"{config.total_timesteps:,} env steps each, on {num_devices} {jax.devices()[0].platform} device(s); compiling..."
    )
    output, compile_s, train_s = compile_then_run(jax.vmap(train), *args)

    # Drop the runs added to fill the last device.
    metrics = jax.tree_util.tree_map(lambda x: np.asarray(x)[:num_runs], output.metrics)
    logs.write_metrics_csv(
        run_dir / "metrics.csv", metrics, runs.seeds,
        extra={f"hp_{name}": [s[name] for s in runs.settings] for name in (grid or {})},
    )
    per_run = logs.final_returns(metrics.episode_return, metrics.env_steps)
    finite = per_run[~np.isnan(per_run)]
    steps_per_run = metrics.env_steps.max(axis=1)  # env steps (GRPO: alive steps) each run took
    total_steps = int(steps_per_run.sum())
    summary = {
        "algo": options.algo,
        "env": config.env,
        "num_seeds": options.num_seeds,
        "seeds": runs.seeds,
        "final_return_mean": logs.none_if_nan(float(finite.mean())) if finite.size else None,
        "final_return_std": float(finite.std()) if finite.size else None,
        "final_return_per_seed": [logs.none_if_nan(float(x)) for x in per_run],
        "total_timesteps": int(steps_per_run.max()),
        "total_env_steps": total_steps,
        "num_updates": int((metrics.env_steps > 0).sum(axis=1).max()),
        "sps": total_steps / train_s,
        "compile_s": compile_s,
        "train_s": train_s,
        "total_s": compile_s + train_s,
        "compile_cache": str(Path(options.compile_cache_dir).expanduser()) if options.compile_cache else None,
        "num_devices": num_devices,
        "device": str(jax.devices()[0].device_kind),
        "run_dir": str(run_dir),
    }
    if hasattr(metrics, "padded_steps"):  # GRPO: env steps run after episodes ended
        summary["padded_env_steps"] = int(np.nansum(metrics.padded_steps))
    if grid:
        summary["sweep"] = grid
        summary["run_settings"] = runs.settings
        summary["ranking"] = rank_configs(runs.settings, per_run)
    logs.write_json(run_dir / "summary.json", summary)
    logs.print_summary(console, summary, runs.seeds, runs.settings if grid else None)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options, config = parse(argv)
        grid = validate(options, config)
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
    run(options, config, run_dir, grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
