"""Run configuration: frozen dataclasses validated up front.

Two kinds of field:

* static fields fix shapes and trip counts (``num_envs``, ``num_steps``,
  ``num_minibatches``, network sizes ...); changing one recompiles;
* traced hyperparameters (declared with :func:`traced`) become JAX values inside
  ``train``, so ``vmap`` can sweep them without recompiling.

Every field carries a one-line docstring: the CLI (tyro) shows it in ``--help``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np


class ConfigError(ValueError):
    """An invalid setting or argument: ``field`` names it ("" for a whole command line), ``message`` what is allowed."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}" if field else message)


class UsageError(Exception):
    """A bad command line or environment that no single field names; reported as one line, exit code 2."""


INT32_MAX = 2**31 - 1
"""The most any size or count setting may be: they reach the device as int32 (loop bounds, counters)."""

MAX_TIMESTEPS = 2**31 - 2**24
"""Per-run env-step budget limit: counters are int32 and may overshoot the budget by one update."""

FLOAT32_MAX = float(np.finfo(np.float32).max)
FINITE = f"a finite number (float32: |x| <= {FLOAT32_MAX:.3g})"
"""What a float setting must be: training computes in float32, where 1e39 is inf."""


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints``, once per class: it was 90% of a sweep's check of its grid points."""
    return typing.get_type_hints(cls)


def plain_and_typed(config: Any) -> None:
    """A config dataclass's ``__post_init__``: numpy scalars become Python numbers and lists tuples
    (so a config built from numpy values validates, hashes and saves as one built from literals), and
    booleans, sequences and nested options must be what their fields say: a truthy ``"False"`` would
    switch a feature on. ConfigError names the field."""
    hints = _type_hints(type(config))
    for f in dataclasses.fields(config):
        hint, value = hints[f.name], getattr(config, f.name)
        if isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, (list, tuple)):
            value = tuple(v.item() if isinstance(v, np.generic) else v for v in value)
        object.__setattr__(config, f.name, value)
        kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if bool in kinds and not (isinstance(value, bool) or (value is None and type(None) in kinds)):
            raise ConfigError(f.name, f"must be True or False{' (or None: the default)' * (type(None) in kinds)}, "
                                      f"got {value!r}")
        if typing.get_origin(hint) is tuple and not isinstance(value, tuple):
            raise ConfigError(f.name, f"must be a sequence, e.g. (64, 64), got {value!r}")
        if dataclasses.is_dataclass(hint) and not isinstance(value, hint):
            raise ConfigError(f.name, f"must be a {hint.__name__}, e.g. {hint.__name__}(group_size=8), got {value!r}")


def traced(default: float) -> Any:
    """A float hyperparameter that is a traced value inside ``train``."""
    return dataclasses.field(default=default, metadata={"traced": True})


@dataclass(frozen=True)
class BaseConfig:
    """Settings shared by PPO and GRPO."""

    env: str = "CartPole-v1"
    """gymnax environment id (any name in gymnax.registered_envs)."""
    total_timesteps: int = 1_000_000
    """environment steps per seed (GRPO: alive steps)."""
    num_envs: int = 1024
    """parallel environments per seed."""
    update_epochs: int = 4
    """passes of SGD over each batch of experience."""
    num_minibatches: int = 16
    """minibatches per epoch."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of each MLP: the policy's, and PPO's critic's."""
    activation: Literal["tanh", "relu"] = "tanh"
    """hidden activation."""
    conv_channels: tuple[int, ...] = ()
    """channels of unpadded 3x3 conv layers before the MLP, for image observations (H, W, C) such as MinAtar's; empty: MLP only."""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over training."""
    normalize_obs: bool | None = None
    """running mean/std observation normalisation (default: on for continuous actions)."""
    log_std_init: float = 0.0
    """initial log standard deviation of the Gaussian policy (continuous actions)."""
    lr: float = traced(2e-3)
    """Adam learning rate."""
    max_grad_norm: float = traced(0.5)
    """global gradient-norm clip."""
    gamma: float = traced(0.99)
    """discount factor."""
    clip_eps: float = traced(0.2)
    """ratio clip epsilon of the surrogate objective."""
    ent_coef: float = traced(0.0)
    """entropy bonus coefficient."""

    def __post_init__(self):
        plain_and_typed(self)

    # ---- derived -------------------------------------------------------------
    @property
    def steps_per_update(self) -> int:
        """Environment steps collected per update (per seed)."""
        raise NotImplementedError

    def hparams(self) -> dict[str, jnp.ndarray]:
        """The traced hyperparameters as float32 scalars (the default ``train`` input)."""
        return {f.name: jnp.float32(getattr(self, f.name)) for f in traced_fields(self)}

    def resolve_hparams(self, overrides: dict[str, jnp.ndarray] | None = None) -> dict[str, jnp.ndarray]:
        """:meth:`hparams` with ``overrides`` (e.g. one point of a sweep) applied.

        An unknown name is a ConfigError (names are static, so this holds inside ``jit``); the
        values may be traced and are not range-checked here: :func:`jaxrl_po.sweep.make_runs` checks them.
        """
        hparams = self.hparams()
        unknown = sorted(set(overrides or {}) - set(hparams))
        if unknown:
            raise ConfigError("hparams", f"{unknown_hparam(self, unknown[0])}; traced: {', '.join(sorted(hparams))}")
        return {**hparams, **(overrides or {})}

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def inert_hparams(self) -> dict[str, str]:
        """Traced hyperparameters that cannot change training under this config: name -> why not."""
        return {}

    # ---- validation ----------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        from jaxrl_po.envs import check_env_name, check_image_observations, make_vec_env  # local: envs imports gymnax

        check_env_name(self.env)
        if isinstance(self.total_timesteps, int) and self.total_timesteps > MAX_TIMESTEPS:  # before int32's limit
            raise ConfigError(
                "total_timesteps",
                f"{self.total_timesteps} is above {MAX_TIMESTEPS:,}, the most one run can count "
                "(env steps are int32 on device)",
            )
        for name in self._positive_ints():
            _check_positive_int(name, getattr(self, name))
        if not self.hidden_sizes:
            raise ConfigError("hidden_sizes", "needs at least one layer width")
        for width in self.hidden_sizes:
            _check_positive_int("hidden_sizes", width)
        for channels in self.conv_channels:
            _check_positive_int("conv_channels", channels)
        if self.conv_channels:
            check_image_observations(self.env, len(self.conv_channels))
        _check_choice("activation", self.activation, ("tanh", "relu"))
        for f in traced_fields(self):
            value = getattr(self, f.name)
            if not is_finite_number(value):
                raise ConfigError(f.name, f"must be {FINITE}, got {value!r}")
        _check_range("lr", self.lr, 0.0, None, low_open=True)
        _check_range("max_grad_norm", self.max_grad_norm, 0.0, None, low_open=True)
        _check_range("gamma", self.gamma, 0.0, 1.0)
        _check_range("clip_eps", self.clip_eps, 0.0, 1.0, low_open=True, high_open=True)
        _check_range("ent_coef", self.ent_coef, 0.0, None)
        _check_range("log_std_init", self.log_std_init, -20.0, 5.0)  # std from 2e-9 to 148
        if self.log_std_init != BaseConfig.log_std_init and make_vec_env(self.env, 1).action_spec.discrete:
            raise ConfigError("log_std_init", f"sets the Gaussian policy's std, but {self.env} has discrete actions "
                                              f"(a categorical policy); leave it at {BaseConfig.log_std_init}")
        if self.total_timesteps < self.steps_per_update:
            raise ConfigError(
                "total_timesteps",
                f"{self.total_timesteps} is smaller than one update "
                f"({self.steps_per_update} steps); use at least {self.steps_per_update}",
            )

    def _positive_ints(self) -> tuple[str, ...]:
        return ("total_timesteps", "num_envs", "update_epochs", "num_minibatches")


@dataclass(frozen=True)
class PPOConfig(BaseConfig):
    """Proximal Policy Optimization with GAE and separate actor and critic MLPs."""

    total_timesteps: int = 2_000_000
    """environment steps per seed."""
    update_epochs: int = 2
    """passes of SGD over each batch of experience."""
    num_steps: int = 16
    """rollout length per environment per update."""
    norm_adv: bool = True
    """normalise advantages within each minibatch."""
    clip_value_loss: bool = False
    """clip the value update to +-clip_eps around the old value (PPO2 style)."""
    normalize_reward: bool | None = None
    """scale rewards by the running std of the discounted return (default: on for continuous actions)."""
    grad_piece_size: int | None = None
    """a larger minibatch's gradient is summed over pieces of this many samples: the same gradient up to float rounding, faster on CPU where a piece stays in cache (default: 1024 on CPU, whole minibatches on GPU/TPU; 0: whole)."""
    gae_lambda: float = traced(0.95)
    """GAE lambda."""
    vf_coef: float = traced(0.5)
    """value loss coefficient."""

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Updates in the budget (a part-update left over is not run)."""
        return self.total_timesteps // self.steps_per_update

    @property
    def minibatch_size(self) -> int:
        return self.steps_per_update // self.num_minibatches

    def _positive_ints(self) -> tuple[str, ...]:
        return super()._positive_ints() + ("num_steps",)

    def validate(self) -> None:
        super().validate()
        _check_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        _check_range("vf_coef", self.vf_coef, 0.0, None)
        if self.grad_piece_size is not None and (isinstance(self.grad_piece_size, bool) or not isinstance(
                self.grad_piece_size, int) or self.grad_piece_size < 0):
            raise ConfigError("grad_piece_size", f"must be a non-negative integer (0: whole minibatches) or None "
                                                 f"(automatic), got {self.grad_piece_size!r}")
        if self.grad_piece_size is not None:
            check_int32("grad_piece_size", self.grad_piece_size)
        batch = self.num_envs * self.num_steps
        if batch % self.num_minibatches:
            raise ConfigError(
                "num_minibatches",
                f"num_envs * num_steps = {self.num_envs} * {self.num_steps} = {batch} "
                f"is not divisible by num_minibatches = {self.num_minibatches}",
            )
        if self.norm_adv and batch == self.num_minibatches:
            raise ConfigError(
                "num_minibatches",
                f"num_envs * num_steps = {batch} samples in {self.num_minibatches} minibatches is 1 sample each: "
                "norm_adv would set every advantage to 0 (no policy gradient); use larger minibatches or --no-norm-adv",
            )


def traced_fields(config: Any) -> list[dataclasses.Field]:
    """The fields of a config dataclass declared with :func:`traced`."""
    return [f for f in dataclasses.fields(config) if f.metadata.get("traced")]


def to_dict(config: BaseConfig) -> dict[str, Any]:
    """A JSON-friendly dict of every field (tuples become lists)."""
    return json_ready(dataclasses.asdict(config))


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def from_dict(cls: type[BaseConfig], data: dict[str, Any]) -> BaseConfig:
    """Inverse of :func:`to_dict` (nested configs rebuilt; lists become tuples in the config's ``__post_init__``)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[f.name]):
            value = from_dict(hints[f.name], value)
        kwargs[f.name] = value
    return cls(**kwargs)


# ---- small checks with uniform messages ----------------------------------------
def is_finite_number(value: Any) -> bool:
    """A real number that stays finite in float32, the precision training uses (1e39 would be inf)."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value) and abs(value) <= FLOAT32_MAX)


def as_float32(value: float) -> float:
    """``value`` rounded to float32, as training sees it (1e-46 -> 0.0)."""
    return float(np.float32(value))


def whole_number(text: str) -> int:
    """An integer flag's value: ``500000``, ``500_000``, or a float literal that is a whole number (``5e5``)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not value.is_integer():
        raise ValueError(f"must be an integer (e.g. 100, 1_000 or 1e3), got {text!r}")
    return int(value)


def whole_number_argument(text: str) -> int:
    """:func:`whole_number` as an argparse ``type``, whose error then carries its message."""
    import argparse

    try:
        return whole_number(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def check_seed(seed: Any, field: str = "seed") -> None:
    """A PRNG seed: an integer that fits uint32 (``jax.random.key`` takes it as one)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ConfigError(field, f"must be an integer from 0 to 2**32 - 1, got {seed!r}")


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        whole_float = isinstance(value, float) and value.is_integer() and value > 0
        hint = f" (write {int(value):_})" if whole_float else ""
        raise ConfigError(name, f"must be a positive integer, got {value!r}{hint}")
    check_int32(name, value)


def check_int32(name: str, value: int) -> None:
    """Sizes and counts reach the device as int32 (loop bounds, step and update counters)."""
    if value > INT32_MAX:
        raise ConfigError(name, f"must be at most {INT32_MAX:,} (an int32 on device), got {value:,}")


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _check_range(
    name: str,
    value: float,
    low: float | None,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if not is_finite_number(value):  # NaN passes every comparison below
        raise ConfigError(name, f"must be {FINITE}, got {value!r}")

    def outside(v: float) -> bool:
        too_low = low is not None and (v < low or (low_open and v == low))
        too_high = high is not None and (v > high or (high_open and v == high))
        return too_low or too_high

    in_float32 = as_float32(value)
    if outside(value) or outside(in_float32):
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        rounded = "" if outside(value) else f" ({in_float32!r} in float32, which training uses)"
        raise ConfigError(name, f"must be in {left}{lo}, {hi}{right}, got {value!r}{rounded}")


@dataclass(frozen=True)
class GRPOOptions:
    """GRPO-specific settings (flags ``--grpo.*``)."""

    def __post_init__(self):
        plain_and_typed(self)

    group_size: int = 8
    """rollouts per group; all members of a group start from the same state."""
    horizon: int | None = None
    """max steps per episode (default: the env's max_steps_in_episode); shorter horizons cut episodes."""
    chunk_size: int = 50
    """steps per rollout chunk (at most the horizon); rollouts stop after the first chunk in which every episode has ended."""
    advantage: Literal["outcome", "rtg"] = "outcome"
    """outcome: group-normalised episode return on every step; rtg: return-to-go minus the leave-one-out mean of the group's."""
    scale: Literal["group", "batch", "none"] = "group"
    """divide advantages by the group's spread, the batch's, or not at all (std for outcome, RMS for rtg)."""
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "grpo"
    """how per-step losses are averaged (see README)."""
    importance_sampling: Literal["token", "sequence"] = "token"
    """per-step ratios, or one ratio per episode (GSPO: exp of the mean log-ratio)."""
    shared_reset: bool = True
    """members of a group start from the same state (False: every member gets its own start; an ablation)."""
    shared_step_keys: bool = False
    """members of a group also share env step keys (common random numbers for stochastic envs)."""
    oversample: int = 1
    """sample oversample x the groups and keep the ones with the largest return spread."""
    ref_sync_every: int = 10
    """updates between reference-policy refreshes (0: never; the reference stays the initial policy)."""
    clip_eps_high: float | None = None
    """upper ratio clip (clip-higher, DAPO); default: clip_eps."""
    kl_coef: float = traced(0.0)
    """beta: weight of the k3 KL penalty to the reference policy."""
    ref_mixup_alpha: float = traced(1.0)
    """on refresh, reference <- alpha * policy + (1 - alpha) * reference (1: copy)."""

    def episode_horizon(self, max_episode_steps: int) -> int:
        """Steps an episode may last: ``horizon``, or the env's own limit when it is None."""
        return self.horizon or max_episode_steps


@dataclass(frozen=True)
class GRPOConfig(BaseConfig):
    """Group Relative Policy Optimization: critic-free, group-normalised outcome advantages."""

    num_envs: int = 128
    """parallel environments per seed: num_groups x group_size."""
    total_timesteps: int = 1_000_000
    """alive environment steps per seed (padding after an episode's end is not counted)."""
    update_epochs: int = 8
    """passes of SGD over each batch of groups."""
    num_minibatches: int = 4
    """minibatches per epoch (whole groups; must divide the number of groups)."""
    anneal_lr: bool = False
    """decay the learning rate linearly to 0 over the step budget."""
    lr: float = traced(1e-3)
    """Adam learning rate."""
    gamma: float = traced(1.0)
    """discount for rtg advantages (outcome advantages use the undiscounted episode return)."""
    grpo: GRPOOptions = dataclasses.field(default_factory=GRPOOptions)

    @property
    def num_groups(self) -> int:
        return self.num_envs // self.grpo.group_size

    @property
    def steps_per_update(self) -> int:
        """The fewest alive steps one update can consume (every episode lasts at least one step)."""
        return self.num_envs * self.grpo.oversample

    @property
    def max_updates(self) -> int:
        """Upper bound on updates within the budget; the metric buffers have this length."""
        return -(-self.total_timesteps // self.steps_per_update)

    def most_steps_per_update(self) -> int:
        """The most alive steps one update can consume: num_envs x oversample x the episode horizon."""
        from jaxrl_po.envs import make_vec_env

        return self.num_envs * self.grpo.oversample * self.grpo.episode_horizon(make_vec_env(self.env, 1).max_episode_steps)

    def hparams(self) -> dict[str, jnp.ndarray]:
        hp = super().hparams()
        hp["kl_coef"] = jnp.float32(self.grpo.kl_coef)
        hp["ref_mixup_alpha"] = jnp.float32(self.grpo.ref_mixup_alpha)
        high = self.clip_eps if self.grpo.clip_eps_high is None else self.grpo.clip_eps_high
        hp["clip_eps_high"] = jnp.float32(high)
        return hp

    def resolve_hparams(self, overrides: dict[str, jnp.ndarray] | None = None) -> dict[str, jnp.ndarray]:
        hp = super().resolve_hparams(overrides)
        if self.grpo.clip_eps_high is None and "clip_eps_high" not in (overrides or {}):
            hp["clip_eps_high"] = hp["clip_eps"]  # the upper clip follows clip_eps, also when clip_eps is swept
        return hp

    def inert_hparams(self) -> dict[str, str]:
        inert = {}
        if self.grpo.advantage != "rtg":
            inert["gamma"] = "only --grpo.advantage rtg discounts (outcome advantages use the undiscounted return)"
        if self.grpo.ref_sync_every == 0:
            inert["ref_mixup_alpha"] = "the reference policy is never refreshed (grpo.ref_sync_every is 0)"
        elif self.grpo.kl_coef == 0:
            inert["ref_mixup_alpha"] = "only the KL penalty uses the reference policy, and grpo.kl_coef is 0"
        return inert

    def validate(self) -> None:
        g = self.grpo
        for name in ("group_size", "chunk_size", "oversample"):
            _check_positive_int(f"grpo.{name}", getattr(g, name))
        if g.group_size < 2:
            raise ConfigError("grpo.group_size", f"must be >= 2 (advantages compare members of a group), got {g.group_size}")
        if g.horizon is not None:
            _check_positive_int("grpo.horizon", g.horizon)
        if not isinstance(g.ref_sync_every, int) or isinstance(g.ref_sync_every, bool) or g.ref_sync_every < 0:
            raise ConfigError("grpo.ref_sync_every", f"must be an integer >= 0, got {g.ref_sync_every!r}")
        check_int32("grpo.ref_sync_every", g.ref_sync_every)
        _check_choice("grpo.advantage", g.advantage, ("outcome", "rtg"))
        _check_choice("grpo.scale", g.scale, ("group", "batch", "none"))
        _check_choice("grpo.loss_type", g.loss_type, ("grpo", "dapo", "dr_grpo", "bnpo"))
        _check_choice("grpo.importance_sampling", g.importance_sampling, ("token", "sequence"))
        super().validate()
        if self.num_envs % g.group_size:
            raise ConfigError(
                "num_envs", f"{self.num_envs} is not a multiple of grpo.group_size = {g.group_size}"
            )
        if self.num_groups % self.num_minibatches:
            raise ConfigError(
                "num_minibatches",
                f"num_groups = num_envs / group_size = {self.num_groups} is not divisible by "
                f"num_minibatches = {self.num_minibatches} (minibatches hold whole groups)",
            )
        from jaxrl_po.envs import make_vec_env

        env_limit = make_vec_env(self.env, 1).max_episode_steps
        if g.horizon is not None and g.horizon > env_limit:  # it would only add padding to every rollout
            raise ConfigError("grpo.horizon", f"{g.horizon} is above {self.env}'s episode limit, where every episode "
                                              f"ends anyway; use at most {env_limit}")
        # The last update may run past the budget by up to one update's alive steps; the count is int32.
        most_per_update = self.most_steps_per_update()
        if most_per_update + self.steps_per_update > 2**31 - 1:  # not even one update fits
            raise ConfigError(
                "grpo.horizon" if g.horizon is not None else "num_envs",
                f"one update can take num_envs x oversample x horizon = {most_per_update:,} alive steps, more than "
                f"the int32 step count holds; make one of them smaller",
            )
        if self.total_timesteps + most_per_update > 2**31 - 1:
            raise ConfigError(
                "total_timesteps",
                f"{self.total_timesteps} plus one update's most alive steps (num_envs x oversample x horizon = "
                f"{most_per_update:,}) overflows the int32 step count; use at most {2**31 - 1 - most_per_update:,}",
            )
        for f in traced_fields(g) + [f for f in dataclasses.fields(g) if f.name == "clip_eps_high"]:
            value = getattr(g, f.name)
            if value is not None and not is_finite_number(value):
                raise ConfigError(f"grpo.{f.name}", f"must be {FINITE}, got {value!r}")
        _check_range("grpo.kl_coef", g.kl_coef, 0.0, None)
        _check_range("grpo.ref_mixup_alpha", g.ref_mixup_alpha, 0.0, 1.0, low_open=True)
        if g.clip_eps_high is not None:
            _check_range("grpo.clip_eps_high", g.clip_eps_high, 0.0, None, low_open=True)
            if g.clip_eps_high < self.clip_eps:
                raise ConfigError(
                    "grpo.clip_eps_high", f"{g.clip_eps_high} must be >= clip_eps = {self.clip_eps}"
                )


CONFIG_CLASSES: dict[str, type[BaseConfig]] = {"ppo": PPOConfig, "grpo": GRPOConfig}
"""The config class of each algorithm name (``--algo``, ``config.json``'s ``algo``)."""


def unknown_hparam(config: BaseConfig, name: str) -> str:
    """Why ``name`` is not one of ``config``'s traced hyperparameters: another algorithm's, or none at all."""
    algo = {cls: algo for algo, cls in CONFIG_CLASSES.items()}[type(config)]
    owners = [other for other, cls in CONFIG_CLASSES.items() if other != algo and name in cls().hparams()]
    if owners:
        return f"{name} is a hyperparameter of --algo {owners[0]}, not of --algo {algo}"
    return f"unknown hyperparameter {name!r}"


def config_class(algo: str) -> type[BaseConfig]:
    """The config class of ``algo``; ConfigError("algo", ...) listing the valid names."""
    if algo not in CONFIG_CLASSES:
        raise ConfigError("algo", f"unknown algorithm {algo!r}; valid: {', '.join(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[algo]
