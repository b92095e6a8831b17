"""Hyperparameter grids x seeds in one compiled call.

Traced hyperparameters (see :func:`jaxrl_po.config.traced`) are inputs of
``train``, so a grid of them is just another batch axis: every (config, seed)
pair becomes one run of ``jit(vmap(train))``, compiled once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from jaxrl_po.config import (FINITE, BaseConfig, ConfigError, as_float32, check_seed, is_finite_number, traced_fields,
                             unknown_hparam)
from jaxrl_po.logs import none_if_nan


class Runs(NamedTuple):
    """The flat batch of runs: R = num_configs x num_seeds, config-major."""

    keys: jax.Array  # key[R]
    hparams: dict[str, jax.Array]  # name -> f32[R] (only the swept names)
    seeds: list[int]  # [R]
    settings: list[dict[str, float]]  # [R] the swept values of each run


def traced_names(config: BaseConfig) -> list[str]:
    return sorted(config.hparams())


def value_text(value: float) -> str:
    """A swept value as text: short (``%g``) where that reads back as the same number, else exact (repr).

    Used wherever runs are told apart by their values (labels, tables, a
    resumed run's ``--sweep``), so two values never print the same.
    """
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def spec_name(spec: str) -> str:
    """The hyperparameter a ``--sweep`` spec names: ``"ent-coef=0,0.01"`` -> ``"ent_coef"``."""
    return spec.partition("=")[0].strip().replace("-", "_")


def parse_sweep_spec(spec: str) -> tuple[str, list[float]]:
    """``"lr=1e-4,3e-4"`` -> ("lr", [1e-4, 3e-4]); raises ConfigError("sweep", ...)."""
    name = spec_name(spec)
    _, sep, values = spec.partition("=")
    if not sep or not name:
        raise ConfigError("sweep", f"expected NAME=V1,V2,... got {spec!r}")
    items = [v.strip() for v in values.split(",")]
    if items == [""]:
        raise ConfigError("sweep", f"{name}: needs at least one value, got {spec!r}")
    if "" in items:  # "1e-3,,2e-3": most likely a value left out, not one to drop quietly
        raise ConfigError("sweep", f"{name}: an empty value between commas in {values!r}")
    bad = next((v for v in items if not _is_number(v)), None)
    if bad is not None:
        raise ConfigError("sweep", f"{name}: values must be numbers, got {bad!r} in {values!r}")
    return name, [float(v) for v in items]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_sweep(specs: Sequence[str]) -> dict[str, list[float]]:
    """``("lr=1e-4,3e-4", "ent_coef=0,0.01")`` -> the grid {name: values}; a name may appear once."""
    grid: dict[str, list[float]] = {}
    for spec in specs:
        name, values = parse_sweep_spec(spec)
        if name in grid:
            raise ConfigError("sweep", f"{name} is given twice; put all its values in one --sweep {name}=V1,V2,...")
        grid[name] = values
    return grid


def check_grid(config: BaseConfig, grid: dict[str, Sequence[float]]) -> None:
    """Every swept name must be a traced hyperparameter and every value valid for it, alone and with the others."""
    check_grid_values(config, grid)
    check_grid_points(config, grid)


def check_grid_values(config: BaseConfig, grid: dict[str, Sequence[float]]) -> None:
    """Every swept name must be a traced hyperparameter and each of its values valid alone (one check per value)."""
    allowed = traced_names(config)
    static = {f.name for f in _all_fields(config)} - set(allowed)
    for name, values in grid.items():
        if name in static:
            raise ConfigError(
                "sweep",
                f"{name} changes shapes or trip counts, or is otherwise compiled in; run separate jobs for it. "
                f"Sweepable: {', '.join(allowed)}",
            )
        if name not in allowed:
            raise ConfigError("sweep", f"{unknown_hparam(config, name)}; sweepable: {', '.join(allowed)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise ConfigError("sweep", f"{name}: values must be a list of numbers, got {values!r}")
        if len(values) == 0:
            raise ConfigError("sweep", f"{name}: needs at least one value")
        for value in values:
            if not is_finite_number(value):
                raise ConfigError("sweep", f"{name}: each value must be {FINITE}, got {value!r}")
            try:
                _with_value(config, name, float(value)).validate()
            except ConfigError as err:
                raise ConfigError("sweep", f"{name}={value_text(value)}: {err}") from None
        _check_no_repeats(name, [float(v) for v in values])


def check_grid_points(config: BaseConfig, grid: dict[str, Sequence[float]]) -> None:
    """Every point of the grid (one check per point): values valid alone can clash, and a name can be inert."""
    points = []
    for combo in itertools.product(*grid.values()):
        point = config
        for name, value in zip(grid, combo):
            point = _with_value(point, name, float(value))
        points.append(point)
        if len(grid) > 1:  # values valid alone can still clash (GRPO's clip_eps_high >= clip_eps)
            try:
                point.validate()
            except ConfigError as err:
                where = ", ".join(f"{name}={value_text(value)}" for name, value in zip(grid, combo))
                raise ConfigError("sweep", f"{where}: {err}") from None
    inert = [point.inert_hparams() for point in points]
    for name in grid:  # its runs would train identically and be ranked as different settings
        if all(name in point_inert for point_inert in inert):
            raise ConfigError("sweep", f"{name} has no effect here: {inert[0][name]}")


def _check_no_repeats(name: str, values: list[float]) -> None:
    """A repeated value would train the same runs twice and count them as more seeds.

    Values are compared as training sees them, in float32 (1e-3 and
    1.0000000000000002e-3 are one value there).
    """
    rounded = [as_float32(v) for v in values]
    repeat = next((i for i, v in enumerate(rounded) if v in rounded[:i]), None)
    if repeat is not None:
        first = values[rounded.index(rounded[repeat])]
        alike = "" if first == values[repeat] else f" ({value_text(values[repeat])} equals {value_text(first)} in float32)"
        raise ConfigError("sweep", f"{name}: {value_text(first)} is given twice{alike}; "
                                   "for more seeds use --num-seeds (or more seeds in make_runs)")


def _all_fields(config: BaseConfig) -> list[dataclasses.Field]:
    """Fields of ``config`` and of its nested option dataclasses (``config.grpo``)."""
    fields = list(dataclasses.fields(config))
    for f in list(fields):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            fields += dataclasses.fields(value)
    return fields


def _with_value(config: BaseConfig, name: str, value: float) -> BaseConfig:
    """config with one traced value replaced (GRPO's live in ``config.grpo``)."""
    if any(f.name == name for f in traced_fields(config)):
        return config.replace(**{name: value})
    grpo = getattr(config, "grpo", None)
    if grpo is not None and hasattr(grpo, name):
        return config.replace(grpo=dataclasses.replace(grpo, **{name: value}))
    return config


def make_runs(config: BaseConfig, seeds: Sequence[int], grid: dict[str, Sequence[float]] | None = None) -> Runs:
    """The grid's product x seeds as one flat batch (config-major, then seed)."""
    grid = dict(grid or {})
    check_grid(config, grid)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise ConfigError("seeds", f"must be a sequence of seeds, e.g. range(4), got {seeds!r}")
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("seeds", "needs at least one seed")
    seen = set()
    for seed in seeds:
        check_seed(seed, "seeds")
        if int(seed) in seen:
            raise ConfigError("seeds", f"seed {seed} is given twice; it would train the same run twice")
        seen.add(int(seed))
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names))) or [()]
    settings, run_seeds = [], []
    for combo in combos:
        for seed in seeds:
            settings.append({n: float(v) for n, v in zip(names, combo)})
            run_seeds.append(int(seed))
    keys = jax.vmap(jax.random.key)(jnp.asarray(run_seeds, jnp.uint32))
    hparams = {n: jnp.asarray([s[n] for s in settings], jnp.float32) for n in names}
    return Runs(keys, hparams, run_seeds, settings)


def mean_and_ci(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise ``(mean, half-width)`` of a Student-t interval across seeds, ignoring NaNs.

    values: f[S, P]. Returns (f[P], f[P]): ``t.ppf(0.5 + level/2, n-1) * std(ddof=1) / sqrt(n)``
    over each column's n finite entries; the half-width is NaN for n < 2 and both are NaN
    for n == 0. Vectorised because plots run it on every grid point of every line.
    """
    values = np.asarray(values, float)
    finite = ~np.isnan(values)
    n = finite.sum(axis=0)
    filled = np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / n
        sq_dev = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
        std = np.sqrt(sq_dev / (n - 1))
        t = scipy.stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))
        half = t * std / np.sqrt(n)
    mean = np.where(n > 0, mean, np.nan)
    half = np.where(n > 1, half, np.nan)
    return mean, half


def confidence_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of :func:`mean_and_ci` for one set of values f[S]; half-width NaN for one value."""
    mean, half = mean_and_ci(np.reshape(values, (-1, 1)), level)
    return float(mean[0]), float(half[0])


def config_key(setting: dict[str, float]) -> tuple:
    """A swept configuration's key for grouping its runs: the same values in any order are one configuration."""
    return tuple(sorted(setting.items()))


def rank_configs(settings: list[dict[str, float]], finals: np.ndarray) -> list[dict[str, Any]]:
    """Group runs by their swept values; mean final return and 95% CI across seeds, best first.

    finals: f[R], NaN for a run without a final return (stopped on non-finite values, or no episode
    finished at the end). Mean and CI are over the seeds that have one (``num_measured``). A configuration
    with fewer of them ranks below every one with more: else a learning rate that diverged on 3 of 4 seeds
    could rank first on its one survivor.
    """
    groups: dict[tuple, list[float]] = {}
    for setting, value in zip(settings, finals):
        groups.setdefault(config_key(setting), []).append(value)
    table = []
    for key, values in groups.items():
        mean, half = confidence_interval(np.asarray(values))
        table.append({
            "hparams": dict(key), "final_return_mean": none_if_nan(mean),
            "ci95": none_if_nan(half), "num_seeds": len(values),
            "num_measured": int(np.isfinite(values).sum()),
            "final_return_per_seed": [none_if_nan(v) for v in values],
        })
    mean_or_worst = lambda row: -math.inf if row["final_return_mean"] is None else row["final_return_mean"]
    table.sort(key=lambda row: (row["num_measured"], mean_or_worst(row)), reverse=True)
    return table

