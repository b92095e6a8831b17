"""Optional metric sinks: TensorBoard (tensorboardX) and Weights & Biases.

Each receives the rows of every compiled segment as they arrive (like
``metrics.csv``): ``append(segment, first_update)`` with [R, L] metric leaves
and the update number of each run's first row.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxrl_po.config import ConfigError


def require(module: str, flag: str, extra: str):
    """Import an optional package, or raise ConfigError(flag) saying how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise ConfigError(
            flag, f"needs the {module} package: pip install {module!r} (or pip install -e \".[{extra}]\")"
        ) from None


def check_wandb_login() -> None:
    """Log in to W&B before anything is compiled or written: a prompt where there is a terminal,
    nothing in offline mode; ConfigError("wandb") where no login is possible (no API key, no terminal)."""
    wandb = require("wandb", "wandb", "wandb")
    try:
        if wandb.setup().settings.mode not in ("offline", "dryrun", "disabled"):  # these need no login
            wandb.login(relogin=False, verify=False)
    except Exception as err:  # wandb's UsageError; pydantic's error for a bad WANDB_MODE
        raise ConfigError("wandb", f"cannot log in to W&B: {_first_line(err)} "
                                   "(or log offline: WANDB_MODE=offline)") from None


def _first_line(err: Exception) -> str:
    """One line for an exception; for a pydantic error (a bad W&B setting such as WANDB_MODE) its first
    problem, naming the setting and the allowed values, where its first line names only the model."""
    problems = err.errors() if callable(getattr(err, "errors", None)) else None
    if problems and isinstance(problems[0], dict) and "msg" in problems[0]:
        first = problems[0]
        where = ".".join(map(str, first.get("loc", ()))) or "value"
        return f"W&B setting {where}: {first['msg']}, got {first.get('input')!r}"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_labels(seeds: Sequence[int], settings: Sequence[dict[str, float]]) -> list[str]:
    """One readable name per run: ``seed0`` or ``lr=0.001,ent_coef=0-seed0`` (distinct for distinct runs)."""
    from jaxrl_po.sweep import value_text

    labels = []
    for seed, setting in zip(seeds, settings):
        prefix = ",".join(f"{k}={value_text(v)}" for k, v in setting.items())
        labels.append(f"{prefix}-seed{seed}" if prefix else f"seed{seed}")
    return labels


def _rows(segment: Any, first_update: np.ndarray):
    """(run, update, env_steps, {field: value}) for every row that ran."""
    env_steps = np.asarray(segment.env_steps)
    fields = {f: np.asarray(getattr(segment, f)) for f in segment._fields if f != "env_steps"}
    for run in range(env_steps.shape[0]):
        for i in np.flatnonzero(env_steps[run] > 0):
            values = {f: float(a[run, i]) for f, a in fields.items()}
            yield run, int(first_update[run] + i), int(env_steps[run, i]), values


class TensorBoardSink:
    """Event files under ``RUN_DIR/tensorboard/<run label>/``; tags ``train/<metric>``, step = env steps.

    ``resumed_env_steps`` (int[R], each run's env steps at the checkpoint a
    resumed run starts from): TensorBoard then hides what an earlier session
    logged after that checkpoint (tensorboardX's ``purge_step``), as
    ``metrics.csv`` drops those rows. NaN values (an update in which no episode
    finished) are left out, not plotted as gaps with a warning each.
    """

    def __init__(self, run_dir: Path, labels: Sequence[str], resumed_env_steps: Sequence[int] | None = None):
        tensorboardX = require("tensorboardX", "tensorboard", "tensorboard")
        root = Path(run_dir) / "tensorboard"
        purge = [None] * len(labels) if resumed_env_steps is None else [int(s) + 1 for s in resumed_env_steps]
        self.writers = [
            tensorboardX.SummaryWriter(str(root / re.sub(r"[^\w.,=+-]", "_", label)), purge_step=step)
            for label, step in zip(labels, purge)
        ]

    def append(self, segment: Any, first_update: np.ndarray) -> None:
        for run, update, env_steps, values in _rows(segment, first_update):
            writer = self.writers[run]
            for name, value in values.items():
                if not np.isnan(value):
                    writer.add_scalar(f"train/{name}", value, global_step=env_steps)
            writer.add_scalar("train/update", update, global_step=env_steps)
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class WandbSink:
    """One W&B run for the whole job; metrics logged as ``<run label>/<metric>`` against ``update``."""

    def __init__(self, run_dir: Path, labels: Sequence[str], config: dict, project: str, entity: str | None):
        wandb = require("wandb", "wandb", "wandb")
        self.labels = list(labels)
        try:
            self.run = wandb.init(project=project, entity=entity, config=config, dir=str(run_dir),
                                  name=Path(run_dir).name)
        except Exception as err:  # e.g. no network, an unknown entity; the login was checked before compiling
            wandb.teardown()  # W&B's parting lines (where its logs are) now, before ours, not at exit
            raise ConfigError("wandb", f"cannot start a W&B run: {_first_line(err)}") from None
        self.run.define_metric("update")
        self.run.define_metric("*", step_metric="update")

    def append(self, segment: Any, first_update: np.ndarray) -> None:
        by_update: dict[int, dict[str, float]] = {}
        for run, update, env_steps, values in _rows(segment, first_update):
            row = by_update.setdefault(update, {"update": update})
            row[f"{self.labels[run]}/env_steps"] = env_steps
            row.update({f"{self.labels[run]}/{name}": value for name, value in values.items()})
        for update in sorted(by_update):
            self.run.log(by_update[update])

    def close(self) -> None:
        self.run.finish()
