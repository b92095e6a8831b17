"""Command line: ``python -m jaxrl_po.train --algo ppo [flags]``.

parse -> validate (one-line errors, exit 2) -> build -> compile -> run every
seed (and swept configuration) through one compiled ``vmap`` program, segment
by segment (:mod:`jaxrl_po.runner`), with a live progress line, streamed
metrics and checkpoints -> print the table.

Exit codes: 0 done; 2 bad input or unusable checkpoint; 3 some run stopped on
non-finite values; 130 interrupted by Ctrl-C, 143 by SIGTERM (after saving a checkpoint
once training has started).
"""

from __future__ import annotations

import argparse
import collections.abc
import contextlib
import dataclasses
import errno
import io
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro

from jaxrl_po.checkpoint import CheckpointError
from jaxrl_po.config import (CONFIG_CLASSES, BaseConfig, ConfigError, UsageError, check_int32, config_class, to_dict,
                             whole_number)
from jaxrl_po.layout import Layout, start_backend
from jaxrl_po.presets import PRESETS, get_preset
from jaxrl_po.stop import STDOUT_CLOSED, StdoutClosed, StopAtOnce, exit_process, stop_exit_code


@dataclass(frozen=True)
class RunOptions:
    """How to run: which algorithm, how many seeds, where to write."""

    algo: Literal["ppo", "grpo"] = "ppo"
    """algorithm to train."""
    preset: Annotated[
        str | None,
        tyro.conf.arg(help="shipped settings for an env and algorithm; flags given with it override them: "
                      + ", ".join(PRESETS)),
    ] = None
    config: Annotated[
        str | None,
        tyro.conf.arg(help="YAML file of settings (algo, preset and config fields; nested grpo: {...}); "
                      "they override the preset, and flags override them"),
    ] = None
    num_seeds: int = 4
    """seeds trained at once in one vmapped, compiled call."""
    seed: int = 0
    """first seed; run i uses seed + i (alone, a run matches its place in a batch up to float rounding)."""
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
    checkpoint_every: int = 0
    """save a checkpoint every N updates (0: only at the end and on Ctrl-C)."""
    keep_checkpoints: int = 3
    """how many of the latest checkpoints to keep."""
    resume: str | None = None
    """continue the run in this directory from its latest checkpoint (its config is reused)."""
    tensorboard: bool = False
    """also write TensorBoard event files to RUN_DIR/tensorboard (needs tensorboardX)."""
    wandb: bool = False
    """also log to Weights & Biases (needs wandb)."""
    wandb_project: str = "jaxrl_po"
    """W&B project."""
    wandb_entity: str | None = None
    """W&B entity (team or user; default: yours)."""
    env_shards: int | None = None
    """devices that split each run's env batch (default: 1 when there are at least as many runs as devices, else devices / gcd(runs, devices); 1 on a CPU split into one device per core)."""
    cpu_devices: int | None = None
    """JAX devices the host CPU is split into, so that runs train on several cores in parallel (default: one per core the process may use; ignored where an accelerator is the default device)."""
    distributed: bool = False
    """join a multi-process job (one process per host) with jax.distributed.initialize before using any device."""
    coordinator_address: str | None = None
    """with --distributed: HOST:PORT of process 0 (default: $JAX_COORDINATOR_ADDRESS or detected on SLURM, Open MPI, Kubernetes, Cloud TPU)."""
    num_processes: int | None = None
    """with --distributed: processes in the job (default: detected, as for --coordinator-address)."""
    process_id: int | None = None
    """with --distributed: this process's index, 0 .. num-processes - 1 (default: detected)."""


def cli_type(config_cls: type[BaseConfig]) -> type:
    """The tyro dataclass for one algorithm: run options plus its config flags, unprefixed."""

    config_field = (
        "settings",
        Annotated[config_cls, tyro.conf.arg(name="")],
        field(default_factory=config_cls),
    )
    Args = dataclasses.make_dataclass("Args", [config_field], bases=(RunOptions,), frozen=True)
    Args.__doc__ = f"Train {config_cls.__name__.removesuffix('Config')} on a gymnax environment."
    return Args


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def config_flags(config_cls: type, prefix: str = "") -> dict[str, str]:
    """Flag -> field of a config class, nested options (``grpo.``) and ``--no-`` forms included,
    spelt as :func:`settings_as_flags` spells them."""
    import typing

    flags = {}
    for name, hint in typing.get_type_hints(config_cls).items():
        if dataclasses.is_dataclass(hint):
            flags.update(config_flags(hint, f"{prefix}{name}."))
        else:
            flags[flag_name(prefix + name)] = flags[flag_name(f"{prefix}no_{name}")] = prefix + name
    return flags


def flag_of(arg: str) -> str:
    """The flag an argument gives, spelt as :func:`flag_name` spells it: ``--ent_coef=0.1`` -> ``--ent-coef``
    (tyro takes either spelling)."""
    flag = arg.split("=")[0]
    return flag.replace("_", "-") if flag.startswith("--") else flag


def fields_set_by(args: list[str], config_cls: type) -> set[str]:
    """The config fields (``lr``, ``grpo.group_size``) that the flags in ``args`` set."""
    names = config_flags(config_cls)
    return {names[flag_of(arg)] for arg in args if flag_of(arg) in names}


def check_swept_not_set(sweep: tuple[str, ...], argv: list[str], config_cls: type) -> None:
    """A swept name given a flag too (``--sweep lr=1e-3 --lr 5e-4``): the sweep would win and the flag
    be ignored, yet config.json would record it; ConfigError("sweep", ...) naming both. (A preset's or
    settings file's value is a base that the sweep replaces, as for any other default.)"""
    from jaxrl_po.sweep import spec_name

    set_by_flags = fields_set_by(argv, config_cls)
    for name in map(spec_name, sweep):
        field = next((f for f in (name, f"grpo.{name}") if f in set_by_flags), None)
        if field:
            raise ConfigError("sweep", f"{name} is swept and also set by {flag_name(field)}; give its values in "
                                       "--sweep alone")


DEPENDENT_OPTIONS = (("wandb_project", "wandb"), ("wandb_entity", "wandb"), ("compile_cache_dir", "compile_cache"))
"""(option, the switch it needs): refused when given with the switch off."""
PATH_OPTIONS = ("config", "run_dir", "resume", "compile_cache_dir")


def user_path(name: str, text: str | None) -> str | None:
    """A path option's value with ``~`` expanded, as a shell does it unquoted; ConfigError if it is empty."""
    if text is not None and not text.strip():
        raise ConfigError(name, f"must name a path, got {text!r}")
    return None if text is None else os.path.expanduser(text)


def check_algo_flags(argv: list[str], algo: str) -> None:
    """A flag that only another algorithm has: ConfigError saying whose it is (tyro would only say "unrecognized")."""
    own = config_flags(config_class(algo))
    for other in CONFIG_CLASSES:
        foreign = {flag: name for flag, name in config_flags(config_class(other)).items() if flag not in own}
        for flag in map(flag_of, argv):
            if flag in foreign:
                raise ConfigError(foreign[flag], f"is a setting of --algo {other}, not of --algo {algo}")


def parse(argv: list[str]) -> tuple[RunOptions, BaseConfig]:
    """Settings in increasing priority: defaults < --preset < --config FILE < flags (or a resumed run's own)."""
    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--algo", "--resume", "--preset", "--config"):
        pre.add_argument(flag, default=None, nargs="?")  # a missing value is left to tyro's one-line error
    known, _ = pre.parse_known_args(argv)
    known.resume, known.config = user_path("resume", known.resume), user_path("config", known.config)
    saved = load_saved_run(Path(known.resume)) if known.resume else None
    file_settings = read_settings_file(known.config) if known.config else {}
    for name in ("algo", "preset"):  # the file may name them; a flag must then agree
        value = file_settings.pop(name, None)
        if value is not None and not isinstance(value, str):
            raise ConfigError("config", f"{known.config}: {name} must be a name, got {value!r}")
        if value is not None and getattr(known, name) not in (None, value):
            raise ConfigError(name, f"{known.config} says {value!r}, got --{name} {getattr(known, name)!r}")
        if getattr(known, name) is None:  # not `or`: --preset '' is an unknown name, not no preset
            setattr(known, name, value)
    preset = get_preset(known.preset) if known.preset is not None else None
    for name in ("config", "preset"):  # the file first: it may be where the preset came from
        if saved and getattr(known, name):
            raise ConfigError(name, "cannot be combined with --resume (the run keeps its own settings)")
    if preset and known.algo and known.algo != preset.algo:
        raise ConfigError("algo", f"preset {known.preset} is for {preset.algo}, got --algo {known.algo}")
    algo = known.algo if known.algo is not None else saved[0].algo if saved else preset.algo if preset else "ppo"
    config_cls = config_class(algo)
    if saved and algo != saved[0].algo:
        raise ConfigError("algo", f"cannot change when resuming: the run in {known.resume} is {saved[0].algo}")
    defaults = dict(algo=algo, preset=known.preset)
    if preset:
        defaults["settings"] = preset.config
    if saved:  # not its sweep: tyro would append a repeated --sweep to it rather than replace it
        defaults.update({f.name: getattr(saved[0], f.name) for f in dataclasses.fields(RunOptions)}, settings=saved[1],
                        sweep=())
    check_algo_flags(argv, algo)
    file_flags = settings_as_flags(file_settings, config_cls, known.config) if file_settings else []
    try:
        args = _tyro_cli(cli_type(config_cls), file_flags + argv, defaults)  # later flags win
    except UsageError:
        if file_flags:  # the file's values alone: if they fail too, the error names the file
            try:
                _tyro_cli(cli_type(config_cls), file_flags, defaults)
            except UsageError as file_err:
                raise UsageError(f"{known.config}: {file_err}") from None
        raise
    from_file = fields_set_by(file_flags, config_cls) - fields_set_by(argv, config_cls)
    if from_file:
        try:
            args.settings.validate()
        except ConfigError as err:  # a value from the file: say so; any other is reported by validate(), in its order
            if err.field in from_file:
                raise ConfigError(err.field, f"{err.message} (set in {known.config})") from None
    options = RunOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunOptions)})
    if not saved:  # (a resumed run refuses such flags anyway)
        check_swept_not_set(options.sweep, argv, config_cls)
    for name, switch in DEPENDENT_OPTIONS:  # else quietly ignored
        if not getattr(options, switch) and any(flag_of(arg) == flag_name(name) for arg in argv):
            raise ConfigError(name, f"only applies with {flag_name(switch)}")
    options = dataclasses.replace(options, **{name: user_path(name, getattr(options, name)) for name in PATH_OPTIONS})
    if saved and not options.sweep:
        options = dataclasses.replace(options, sweep=saved[0].sweep)
    if saved:
        check_unchanged(saved, options, args.settings)
    return options, args.settings


def read_settings_file(path: str) -> dict[str, Any]:
    """The mapping in a YAML settings file (JSON is YAML too); ConfigError("config", ...) if unusable."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)
        and aliases (``*name``): nine nested ones made a list of 9**8 widths, and the CLI hung expanding it."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, collections.abc.Hashable):
                    continue  # PyYAML's own check below names it ("found unhashable key")
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice (again on line {line})")
                seen.add(key)
            return super().construct_mapping(node, deep)

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                alias = self.peek_event()
                raise yaml.composer.ComposerError(None, None, f"aliases (*{alias.anchor}) are not supported; write "
                                                              "the value out", alias.start_mark)
            return super().compose_node(parent, index)

    # Booleans as YAML 1.2 spells them: YAML 1.1's yes/no/on/off would quietly become true/false.
    bool_tag = "tag:yaml.org,2002:bool"
    UniqueKeyLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    UniqueKeyLoader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    try:
        data = yaml.load(Path(path).read_text(), Loader=UniqueKeyLoader)
    except OSError as err:
        raise ConfigError("config", f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{path} is not a text file (YAML or JSON)") from None
    except yaml.YAMLError as err:
        raise ConfigError("config", f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:  # PyYAML's parser recurses per level: a few thousand levels was a traceback
        raise ConfigError("config", f"{path} is nested too deeply to read") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping of settings (name: value), got {type(data).__name__}")
    return data


def settings_as_flags(settings: dict[str, Any], config_cls: type, source: str, prefix: str = "") -> list[str]:
    """A settings mapping as the equivalent command-line flags, so tyro checks their types like typed flags.

    ``{"lr": 3e-4, "hidden_sizes": [256, 256], "grpo": {"group_size": 16}}`` ->
    ``--lr=0.0003 --hidden-sizes 256 256 --grpo.group-size=16``; strict booleans
    become ``--name`` / ``--no-name``. A single value is joined to its flag by
    ``=``, so that a value starting with ``-`` is not read as a flag.
    """
    import typing

    hints = typing.get_type_hints(config_cls)
    flags = []
    for key, value in settings.items():
        name = str(key).replace("-", "_")
        if name not in hints or name == "settings":
            valid = ", ".join(f"{prefix}{n}" for n in hints)
            raise ConfigError("config", f"{source}: unknown setting {prefix + str(key)!r} for {config_cls.__name__}; "
                                        f"valid: {valid}")
        flag = flag_name(prefix + name)
        if dataclasses.is_dataclass(hints[name]):
            if not isinstance(value, dict):
                raise ConfigError("config", f"{source}: {prefix}{name} must be a mapping of its fields")
            flags += settings_as_flags(value, hints[name], source, f"{prefix}{name}.")
        elif hints[name] is bool:
            if not isinstance(value, bool):
                raise ConfigError("config", f"{source}: {prefix}{name} must be true or false, got {value!r}")
            flags.append(flag if value else flag_name(f"{prefix}no_{name}"))
        elif value is None and type(None) not in typing.get_args(hints[name]):
            raise ConfigError("config", f"{source}: {prefix}{name} has no value (null); give one, or leave it out "
                                        "for the default")
        elif bool in typing.get_args(hints[name]) and not isinstance(value, bool) and value is not None:
            # bool | None: tyro would read the string "False" as False, where a bool field refuses it
            raise ConfigError("config", f"{source}: {prefix}{name} must be true, false or null (the default rule), "
                                        f"got {value!r}")
        elif isinstance(value, (list, tuple)):
            if typing.get_origin(hints[name]) not in (tuple, list):
                raise ConfigError("config", f"{source}: {prefix}{name} takes one value, got the list {value!r}")
            flags += [flag, *map(str, value)]
        else:
            flags.append(f"{flag}={value}")
    return flags


MAX_CPU_DEVICES = 1024
"""--cpu-devices' upper bound: XLA's start-up time grows faster than the device count."""
SAVED_OPTIONS = ("checkpoint_every", "keep_checkpoints", "tensorboard", "wandb", "wandb_project", "wandb_entity")
"""Run options kept in config.json so that --resume continues with them (flags given with it replace them)."""


def check_saved_option(name: str, value: Any) -> None:
    """ValueError unless ``value`` has the type of RunOptions' field ``name`` (bool is not an int here)."""
    import typing

    hint = typing.get_type_hints(RunOptions)[name]
    kinds = typing.get_args(hint) or (hint,)  # str | None -> (str, NoneType)
    if not any(isinstance(value, kind) and (kind is bool or not isinstance(value, bool)) for kind in kinds):
        wanted = {int: "an integer", bool: "true or false", str: "a string", type(None): "null"}
        raise ValueError(f"options.{name} must be {' or '.join(wanted[kind] for kind in kinds)}, got {value!r}")


def load_saved_run(run_dir: Path) -> tuple[RunOptions, BaseConfig]:
    """The options and config a run directory was started with (from its config.json)."""
    from jaxrl_po.checkpoint import CHECKPOINT_DIR, has_checkpoint
    from jaxrl_po.logs import error_reason, read_run_config
    from jaxrl_po.sweep import value_text

    try:
        data, config = read_run_config(run_dir)
        saved_options = {k: v for k, v in data.get("options", {}).items() if k in SAVED_OPTIONS}
        for name, value in saved_options.items():
            check_saved_option(name, value)
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as err:
        raise ConfigError("resume", f"{run_dir} is not a run directory this program can resume "
                                    f"({run_dir / 'config.json'}: {error_reason(err)})") from None
    if not has_checkpoint(run_dir):
        raise ConfigError("resume", f"{run_dir} has no checkpoint to resume from (none in {run_dir / CHECKPOINT_DIR})")
    for place in (run_dir, run_dir / CHECKPOINT_DIR):  # resuming adds checkpoints and rewrites metrics.csv
        if not os.access(place, os.W_OK | os.X_OK):
            raise ConfigError("resume", f"cannot write to {place} (permission denied)")
    seeds, grid = data["seeds"], data["sweep"]
    sweep = tuple(f"{name}={','.join(map(value_text, values))}" for name, values in grid.items())
    options = RunOptions(algo=data["algo"], num_seeds=len(seeds), seed=seeds[0], run_dir=str(run_dir),
                         sweep=sweep, resume=str(run_dir), **saved_options)
    return options, config


def check_unchanged(saved: tuple[RunOptions, BaseConfig], options: RunOptions, config: BaseConfig) -> None:
    """Resuming continues the same runs: the config, seeds and sweep cannot change."""
    from jaxrl_po.sweep import parse_sweep

    old_options, old_config = saved
    pairs = [(name, getattr(old_options, name), getattr(options, name)) for name in ("num_seeds", "seed", "run_dir")]
    pairs.append(("sweep", parse_sweep(old_options.sweep), parse_sweep(options.sweep)))
    old, new = to_dict(old_config), to_dict(config)
    for name in old:
        if isinstance(old[name], dict):  # nested options (config.grpo): compare field by field
            pairs += [(f"{name}.{sub}", old[name][sub], new[name][sub]) for sub in old[name]]
        else:
            pairs.append((name, old[name], new[name]))
    for name, before, after in pairs:
        if name == "run_dir" and before and after and Path(before).resolve() == Path(after).resolve():
            continue  # the same directory, spelt differently ("runs/x/", "./runs/x")
        if before != after:
            raise ConfigError(name, f"cannot change when resuming: the run used {before!r}, got {after!r}")


INTEGER_FLAGS = tyro.constructors.ConstructorRegistry()
"""Integer flags (and YAML values) also take ``5e5``: step budgets are commonly written so."""


@INTEGER_FLAGS.primitive_rule
def _integer_rule(info: tyro.constructors.PrimitiveTypeInfo) -> tyro.constructors.PrimitiveConstructorSpec | None:
    if info.type is not int:
        return None
    return tyro.constructors.PrimitiveConstructorSpec(
        nargs=1, metavar="INT", instance_from_str=lambda args: whole_number(args[0]),
        is_instance=lambda x: isinstance(x, int) and not isinstance(x, bool), str_from_instance=lambda x: [str(x)],
    )


def _tyro_cli(cls: type, argv: list[str], defaults: dict):
    """tyro.cli, but its boxed error message is condensed to one line."""
    kwargs = dict(args=argv, default=cls(**defaults), prog="python -m jaxrl_po.train", registry=INTEGER_FLAGS)
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
        message = re.sub(r"^Error parsing (--[\w.-]+): ", r"\1: ", _one_line(captured.getvalue()))
        raise UsageError(_clearer(message, argv) or f"invalid arguments: {' '.join(argv)}") from None


def _clearer(message: str, argv: list[str]) -> str:
    """Three of tyro's messages that name neither the flag nor the fix, made to: a value after an
    on/off switch (``--norm-adv False``), values that do not parse (``--hidden-sizes 64 abc``), and
    a bad value of an optional integer (``--env-shards 1.5``: tyro listed why each of None and int refused it)."""
    optional_int = re.fullmatch(r"(--[\w.-]+): no type matching \{None\}\|INT could be instantiated from .*"
                                r" - <class 'int'>: (.*)", message)
    if optional_int:
        refusal, got, value = optional_int[2].rpartition(", got ")
        return f"{optional_int[1]}: {refusal} or None{got}{value}"
    unrecognized = re.fullmatch(r"Unrecognized options: (\S+)", message)
    if unrecognized and unrecognized[1] in argv and argv.index(unrecognized[1]) > 0:
        switch = argv[argv.index(unrecognized[1]) - 1]
        name = switch.removeprefix("--no-").removeprefix("--")
        if switch.startswith("--"):  # a flag that takes a value would have taken this one
            return f"{switch}: is an on/off switch and takes no value (got {unrecognized[1]}); give --{name} or --no-{name}"
    return re.sub(r"Could not find valid parse for arguments: (.*)$", r"cannot read \1 (--help gives the expected values)",
                  message)


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


JOIN_FLAGS = ("coordinator_address", "num_processes", "process_id")
"""RunOptions that say how to join a --distributed job."""


def split_cpu_or_exit(argv: list[str]) -> bool:
    """:func:`split_cpu` for a script: a bad ``--cpu-devices`` prints the CLI's one-line error and exits 2."""
    try:
        return split_cpu(argv)
    except ConfigError as err:
        print(f"error: {flag_name(err.field)}: {err.message}", file=sys.stderr)
        raise SystemExit(2) from None


def split_cpu(argv: list[str]) -> bool:
    """Make the CPU backend one JAX device per core (or ``--cpu-devices N``), before any backend starts.

    Returns whether it did (``runner.job_layout`` then gives whole runs to the cores).

    XLA runs one compiled program on one core when its operations are small,
    as an RL update's are, so the runs of a multi-seed job only use every core
    when they are spread over several CPU devices (16 seeds of the CartPole
    benchmark: 1.6x on 2 cores, README "Throughput"). Left as it is when the
    user already fixed the CPU device count (``JAX_NUM_CPU_DEVICES``, or
    ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``) or for a
    ``--distributed`` job, unless ``--cpu-devices`` is given, and in a process
    where JAX has already started.
    """
    import jax

    from jaxrl_po.layout import usable_cores

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--cpu-devices", dest="cpu_devices")
    pre.add_argument("--distributed", action="store_true")
    known, _ = pre.parse_known_args(argv)
    count = _optional_int("cpu_devices", known.cpu_devices)
    if count is None:
        user_set = jax.config.jax_num_cpu_devices >= 0 or "xla_force_host_platform_device_count" in os.environ.get(
            "XLA_FLAGS", "")
        if user_set or known.distributed:
            return False
        count = usable_cores()
    if not 1 <= count <= MAX_CPU_DEVICES:  # 1,024 devices start in 2 s, 4,096 in 40 s
        raise ConfigError("cpu_devices", f"must be in 1 .. {MAX_CPU_DEVICES}, got {count}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX already started in this process (the CLI called from Python): keep its devices
        have = len(jax.devices("cpu"))
        if known.cpu_devices is not None and have != count:
            raise ConfigError("cpu_devices", f"JAX already started in this process with {have} CPU device(s); "
                                             "set it in a new process") from None
        return False
    return True


def refuse_debug_nans() -> None:
    """UsageError if ``JAX_DEBUG_NANS`` is on: it stopped every run with a traceback from inside the compiled
    loop, as the metrics hold NaN by design. (Evaluating works with it, so only training refuses it.)"""
    import jax

    if jax.config.jax_debug_nans:
        raise UsageError("JAX_DEBUG_NANS is on, but a run's metrics hold NaN by design (an update in which no "
                         "episode finished has no return); a run checks its losses, gradients and parameters "
                         "itself and stops on a non-finite one (exit code 3, metrics.csv's nonfinite)")


def join_processes(argv: list[str]) -> None:
    """With --distributed, join the multi-process job (``jax.distributed.initialize``).

    This reads the raw command line, before :func:`parse`: it must come before
    anything starts a JAX backend, and parsing already does (importing gymnax
    creates arrays). The flags are RunOptions fields too, for --help.
    """
    from jaxrl_po import distributed

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--distributed", action="store_true")
    pre.add_argument("--no-distributed", dest="distributed", action="store_false")
    for name in JOIN_FLAGS:
        pre.add_argument(flag_name(name), dest=name)
    known, _ = pre.parse_known_args(argv)
    if not known.distributed:
        given = [name for name in JOIN_FLAGS if getattr(known, name) is not None]
        if given:
            raise ConfigError(given[0], "only applies with --distributed")
        return
    n, i = _optional_int("num_processes", known.num_processes), _optional_int("process_id", known.process_id)
    if n is not None and n < 1:
        raise ConfigError("num_processes", f"must be >= 1, got {n}")
    if i is not None and (i < 0 or (n is not None and i >= n)):
        raise ConfigError("process_id", f"must be in 0 .. {'num_processes - 1' if n is None else n - 1}, got {i}")
    address = known.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address is not None:
        check_coordinator_address(address, "" if known.coordinator_address else " ($JAX_COORDINATOR_ADDRESS)")
    try:
        distributed.initialize(known.coordinator_address, n, i)
    except (ValueError, RuntimeError) as err:
        raise ConfigError("distributed", f"cannot join the job: {str(err).splitlines()[0]}") from None


def check_coordinator_address(address: str, where: str = "") -> None:
    """Refuse an address that is not HOST:PORT with a port in 1 .. 65535 (ConfigError("coordinator_address")).

    JAX passes it on unchecked: a missing port is an IndexError inside JAX, a
    port that is not a number a segmentation fault in XLA's coordinator.
    """
    host, _, port = address.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ConfigError("coordinator_address",
                          f"must be HOST:PORT with a port in 1 .. 65535, got {address!r}{where}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):  # JAX would take the address's last part
        raise ConfigError("coordinator_address", f"an IPv6 host goes in brackets, [HOST]:PORT (as [{host}]:{port}), "
                                                 f"got {address!r}{where}")


def _optional_int(name: str, text: str | None) -> int | None:
    try:
        return None if text is None else whole_number(text)
    except ValueError as err:
        raise ConfigError(name, str(err)) from None


def validate(options: RunOptions, config: BaseConfig, cores_split: bool = False) -> tuple[dict[str, list[float]], Layout]:
    """Check everything before compiling; returns the sweep grid (name -> values) and the job's device layout."""
    from jaxrl_po import distributed, sinks
    from jaxrl_po.runner import check_fits, job_layout
    from jaxrl_po.sweep import check_grid_points, check_grid_values, parse_sweep

    if not isinstance(options.num_seeds, int) or not 1 <= options.num_seeds <= 2**32:  # seeds are uint32 keys
        raise ConfigError("num_seeds", f"must be an integer in 1 .. 2**32, got {options.num_seeds!r}")
    if not 0 <= options.seed <= 2**32 - options.num_seeds:  # seeds are uint32 PRNG keys
        raise ConfigError("seed", f"must be in 0 .. 2**32 - num_seeds = {2**32 - options.num_seeds}, got {options.seed}")
    if options.checkpoint_every < 0:
        raise ConfigError("checkpoint_every", f"must be >= 0 (0: only at the end), got {options.checkpoint_every}")
    check_int32("checkpoint_every", options.checkpoint_every)  # compared with the int32 update count
    if options.keep_checkpoints < 1:
        raise ConfigError("keep_checkpoints", f"must be >= 1, got {options.keep_checkpoints}")
    try:
        if options.tensorboard:
            sinks.require("tensorboardX", "tensorboard", "tensorboard")
        if options.wandb:  # only process 0 logs; the others learn whether it can
            distributed.primary_only(sinks.check_wandb_login, ConfigError("wandb", "process 0 cannot log in to W&B"))
    except ConfigError as err:  # a resumed run keeps its sinks: say how to go on without one
        if options.resume:
            raise ConfigError(err.field, f"{err.message}; the run logged there, so --resume does too "
                                         f"(--no-{err.field} resumes without it)") from None
        raise
    config.validate()
    grid = parse_sweep(options.sweep)
    check_grid_values(config, grid)
    num_runs = options.num_seeds * math.prod(len(values) for values in grid.values())
    layout = job_layout(config, num_runs, options.env_shards, cores_split)
    check_fits(config, num_runs, layout, options.num_seeds)
    check_grid_points(config, grid)  # after the layout and fit checks: a grid of 60**5 points took hours
    return grid, layout


def default_run_dir(options: RunOptions, config: BaseConfig) -> Path:
    from jaxrl_po import distributed

    stamp = datetime.fromtimestamp(distributed.from_primary(int(time.time()))).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{options.algo}-{config.env}-{stamp}"


def open_run_dir(options: RunOptions, config: BaseConfig) -> tuple[Path, bool]:
    """(run directory, whether this call made it): the resumed one, or one taken for this run alone.

    Process 0 takes it (:func:`jaxrl_po.logs.make_run_dir`) and locks it for as
    long as it runs (:func:`jaxrl_po.logs.lock_run_dir`); the others wait for
    it. A default name that another run took first (two runs started in the
    same second) gets a suffix: ``...-120000-2``.
    """
    from jaxrl_po import distributed
    from jaxrl_po.logs import lock_run_dir, make_run_dir

    if options.resume:
        def lock() -> None:
            if not lock_run_dir(Path(options.resume)):
                raise ConfigError("resume", f"{options.resume} is in use: another process is training there "
                                            "(the run itself, or a --resume of it, is still going)")

        distributed.primary_only(lock, ConfigError("resume", f"process 0 cannot lock {options.resume}"))
        return Path(options.resume), False
    base = Path(options.run_dir) if options.run_dir else default_run_dir(options, config)
    numbered = lambda n: base if n == 1 else base.with_name(f"{base.name}-{n}")

    def take() -> tuple[int, bool]:  # (suffix, made)
        for suffix in range(1, 101):
            run_dir = numbered(suffix)
            try:
                made = make_run_dir(run_dir)
                lock_run_dir(run_dir)  # just taken: no other process can hold it yet
                return suffix, made
            except FileExistsError as err:
                if options.run_dir or suffix == 100:
                    raise ConfigError("run_dir", f"cannot use {run_dir}: {err}") from None
            except OSError as err:
                raise ConfigError("run_dir", f"cannot use {run_dir}: {err.strerror or err}") from None

    suffix, made = distributed.primary_only(take, ConfigError("run_dir", f"process 0 cannot use {base}")) or (0, False)
    return numbered(distributed.from_primary(suffix)), made


def undo_run_dir(run_dir: Path, made: bool) -> bool:
    """Undo :func:`open_run_dir` for a run that stopped before saving anything; returns whether it was undone.

    Only its empty checkpoint directory (and the run directory, if made for this
    run and now empty) is removed, so the same ``--run-dir`` can be used again;
    W&B's logs of a W&B run that could not start stay. Anything else there was
    written by the run or a user, and then nothing is removed. Process 0 alone,
    as it alone took the directory.
    """
    from jaxrl_po import distributed
    from jaxrl_po.checkpoint import CHECKPOINT_DIR
    from jaxrl_po.logs import WANDB_DIR

    if not distributed.is_primary():
        return False
    checkpoints = run_dir / CHECKPOINT_DIR
    try:
        others = {p.name for p in run_dir.iterdir()} - {CHECKPOINT_DIR}
        if others <= {WANDB_DIR} and not any(checkpoints.iterdir()):
            checkpoints.rmdir()
            if made and not others:
                run_dir.rmdir()
            return True
    except OSError:
        pass
    return False


def enable_compile_cache(directory: str) -> str:
    """Persist compiled programs (JAX's compilation cache) so a repeated run skips compiling; returns its path."""
    import jax

    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
    except OSError as err:
        raise ConfigError("compile_cache_dir", f"cannot use {path}: {err.strerror or err} "
                                               "(or turn the cache off: --no-compile-cache)") from None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(path)


def run(options: RunOptions, config: BaseConfig, run_dir: Path, grid: dict[str, list[float]], layout: Layout,
        compile_cache: str | None) -> int:
    """Train every (swept config, seed) pair through one compiled program; write the run directory.

    ``grid`` and ``layout`` as :func:`validate` returned them; ``compile_cache``: the
    directory :func:`enable_compile_cache` returned, or None. Returns the exit code
    (see the module docstring).
    """
    import jax

    from jaxrl_po import distributed, sinks
    from jaxrl_po.logs import make_console
    from jaxrl_po.runner import JobSpec, train_job
    from jaxrl_po.sweep import make_runs

    primary = distributed.is_primary()
    console = make_console(quiet=not primary)  # only process 0 prints
    runs = make_runs(config, seeds_of(options), grid)
    meta = json.loads(json.dumps({"algo": options.algo, "seeds": seeds_of(options), "sweep": grid, **to_dict(config)}))
    saved_options = {name: getattr(options, name) for name in SAVED_OPTIONS}
    labels = sinks.run_labels(runs.seeds, runs.settings)

    def make_sinks(resumed_env_steps: np.ndarray | None) -> list:
        job_sinks = []
        # W&B first: it can fail to start (no network, an unknown entity), and then nothing else is written.
        if options.wandb:
            job_sinks.append(sinks.WandbSink(run_dir, labels, meta, options.wandb_project, options.wandb_entity))
        if options.tensorboard:
            job_sinks.append(sinks.TensorBoardSink(run_dir, labels, resumed_env_steps))
        return job_sinks
    num_runs = len(runs.seeds)
    job = JobSpec(
        algo_name=options.algo, config=config, runs=runs, run_dir=run_dir, meta=meta, options=saved_options,
        checkpoint_every=options.checkpoint_every, keep_checkpoints=options.keep_checkpoints,
        progress=options.progress, make_sinks=make_sinks, layout=layout, compile_cache=compile_cache,
    )
    grid_text = f" x {num_runs // options.num_seeds} configs" if grid else ""
    hosts = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    console.print(
        f"[bold]{options.algo.upper()}[/] on {config.env}: {options.num_seeds} seed(s){grid_text}, "
        f"{config.total_timesteps:,} env steps each, on {layout.devices} {jax.devices()[0].platform} "
        f"device(s){hosts} (mesh: runs {layout.runs} x envs {layout.envs})"
    )
    _, code = train_job(job, console, resume=bool(options.resume))
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = made = None
    try:
        with StopAtOnce():  # Ctrl-C and SIGTERM alike: stop, tidy up, one line (the runner saves once training)
            cores_split = split_cpu(argv)
            join_processes(argv)
            start_backend()
            refuse_debug_nans()
            options, config = parse(argv)
            grid, layout = validate(options, config, cores_split)
            compile_cache = enable_compile_cache(options.compile_cache_dir) if options.compile_cache else None
            run_dir, made = open_run_dir(options, config)
            return run(options, config, run_dir, grid, layout, compile_cache)
    except (ConfigError, UsageError, CheckpointError) as err:
        if run_dir:  # e.g. W&B could not start a run: a rerun with the same --run-dir must not be refused
            undo_run_dir(run_dir, made)
        where = f"{flag_name(err.field)}: {err.message}" if isinstance(err, ConfigError) else err
        print(f"error: {where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # outside training (during it the runner saves a checkpoint), or a 2nd one
        name, code = stop_exit_code(err)
        stopped = f"interrupted ({name})" + stop_aftermath(err)
        if not run_dir:
            message = stopped
        elif undo_run_dir(run_dir, made):
            message = f"{stopped} before training started; nothing was saved"
        else:
            message = f"{stopped}; {run_dir} keeps what was written before"
        print(f"\n{message}", file=sys.stderr)
        return code
    except StdoutClosed:
        if run_dir:
            undo_run_dir(run_dir, made)
        print("stdout closed before training started; nothing was saved", file=sys.stderr)
        return STDOUT_CLOSED
    except BaseException:  # anything else (an error of a library's own)
        if run_dir:  # the same tidy-up: a rerun with the same --run-dir must not be refused
            undo_run_dir(run_dir, made)
        raise
    finally:  # outside StopAtOnce: no import here (a Ctrl-C in one, after --help, was a traceback)
        logs = sys.modules.get("jaxrl_po.logs")  # not imported: no run directory was locked
        if logs is not None:
            logs.unlock_run_dirs()


def stop_aftermath(stop: KeyboardInterrupt) -> str:
    """`` (then ValueError: ...)``: the error a stop came out as (:func:`jaxrl_po.stop.stop_instead_of`), one line.

    Not ``__cause__``: jax chains its own marker there to a stop raised while it lowers an operation.
    """
    cause = getattr(stop, "came_out_as", None)
    if cause is None:
        return ""
    from jaxrl_po.logs import error_reason

    reason = (error_reason(cause).splitlines() or [""])[0]
    return f" (then {type(cause).__name__}: {reason})"


if __name__ == "__main__":
    exit_process(main())
