"""Where the runs and their environments live: a 2-D device mesh ("runs", "envs").

The run axis (seeds x swept configurations) of ``jit(vmap(...))`` is laid over
the mesh's "runs" devices; each run's env batch is split over its "envs" devices,
so one agent can span several devices. Inside the algorithms :func:`shard_envs`
marks the env-batch axis of the arrays that carry it (env states, observations,
rollout buffers, SGD minibatches). GSPMD then splits that work and inserts the
all-reduces that the means over the batch need (losses, gradients, normaliser
statistics). Parameters and optimiser state stay replicated over "envs".

With no mesh set, or an env axis of one device, :func:`shard_envs` does nothing:
the same code runs unchanged, with the same results, on one device.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxrl_po.config import BaseConfig, ConfigError, GRPOConfig, UsageError
from jaxrl_po.distributed import is_prng_key

RUNS, ENVS = "runs", "envs"


class Layout(NamedTuple):
    """How many devices each mesh axis has; the mesh uses the first runs x envs devices."""

    runs: int  # devices along the run axis
    envs: int  # devices that split each run's env batch

    @property
    def devices(self) -> int:
        """Devices in the mesh: runs x envs."""
        return self.runs * self.envs

    def runs_per_device(self, num_runs: int) -> int:
        """Runs each device along the run axis holds: ``num_runs`` over the "runs" devices, rounded up."""
        return -(-num_runs // self.runs)

    def padded_runs(self, num_runs: int) -> int:
        """The run axis length: ``num_runs`` rounded up to a multiple of the "runs" devices."""
        return self.runs_per_device(num_runs) * self.runs


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def start_backend() -> None:
    """Start JAX's backend before anything imports gymnax (whose first array would): one it cannot start
    is then one line, not a traceback from gymnax's import. ``train`` calls it once it has set up the CPU
    devices and a multi-process job, which must come before the backend starts; ``evaluate`` first thing.

    ``JAX_PLATFORMS=gpu`` on a machine without a GPU, say, said "Unable to initialize backend 'rocm'"
    from deep inside gymnax's first array.
    """
    try:
        jax.devices()
    except RuntimeError as err:
        reason = (str(err).splitlines() or [""])[0]
        asked = os.environ.get("JAX_PLATFORMS")
        hint = f" (JAX_PLATFORMS={asked}: leave it unset, or set the platforms this machine has)" if asked else ""
        raise UsageError(f"JAX cannot start its backend here{hint}: {reason}") from None


def choose_layout(num_runs: int, num_devices: int, env_shards: int | None = None) -> Layout:
    """The mesh shape for ``num_runs`` runs on ``num_devices`` devices.

    Automatic (``env_shards=None``): runs first. With at least as many runs as
    devices every device takes whole runs (the runs are padded to a multiple of
    the device count). With fewer, the run axis takes gcd(runs, devices), which
    divides the runs without padding, and each run's envs are split over the
    rest. ``env_shards`` fixes the env axis instead (it must divide the devices).
    """
    if env_shards is None:
        runs = num_devices if num_runs >= num_devices else math.gcd(num_runs, num_devices)
        return Layout(runs, num_devices // runs)
    if isinstance(env_shards, bool) or not isinstance(env_shards, int) or env_shards < 1 \
            or num_devices % env_shards:
        raise ConfigError("env_shards", f"must be a positive divisor of the device count {num_devices}, "
                                        f"got {env_shards!r}")
    return Layout(num_devices // env_shards, env_shards)


def check_layout(config: BaseConfig, layout: Layout) -> None:
    """Raise ConfigError (field ``num_envs``) when a run's env batch cannot be split evenly over ``layout.envs``.

    GRPO splits whole groups, so that a group's advantages never need another
    device. SGD minibatches are split too; where they do not divide, XLA pads
    the split (same results, some devices idle).
    """
    e = layout.envs
    if e == 1:
        return
    fix = f"or set the env axis with --env-shards (a divisor of the {layout.runs * e} devices; 1: no split)"
    if isinstance(config, GRPOConfig):
        groups = config.num_groups
        if groups % e:
            raise ConfigError("num_envs", f"num_envs = {config.num_envs} is {groups} groups of {config.grpo.group_size}, "
                                          f"which cannot be split into whole groups over the {e} devices of the env "
                                          f"axis; use a number of groups divisible by {e}, {fix}")
    elif config.num_envs % e:
        raise ConfigError("num_envs", f"num_envs = {config.num_envs} cannot be split evenly over the {e} devices of "
                                      f"the env axis; use a multiple of {e}, {fix}")


def make_mesh(layout: Layout) -> Mesh:
    """The ("runs", "envs") mesh over the first runs x envs devices of all processes (auto axes: GSPMD places the rest).

    Devices of one process come next to each other along "envs", so an env axis
    that fits in one host never crosses the network.
    """
    devices = jax.devices()[: layout.devices]  # all, or the first runs x envs (runner.job_layout)
    return jax.make_mesh((layout.runs, layout.envs), (RUNS, ENVS), axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=devices)


def run_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (run) axis over "runs", everything else replicated."""
    return NamedSharding(mesh, PartitionSpec(RUNS))


def on_run_axis(abstract: Any, mesh: Mesh) -> Any:
    """``abstract`` (per-run ShapeDtypeStructs with shardings) with every leaf split over "runs".

    XLA may place a leaf that starts out equal in every run (zero biases) replicated;
    after a segment it comes back split, and the compiled segment would then refuse
    it. Leaves already split over "runs" (and perhaps "envs") keep their sharding.
    """

    def pinned(s):
        split = any(RUNS == axis or (isinstance(axis, tuple) and RUNS in axis) for axis in s.sharding.spec)
        return s if split else jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=run_sharding(mesh))

    return jax.tree_util.tree_map(pinned, abstract)


def env_shards_in_context() -> int:
    """Devices of the "envs" axis of the mesh set with ``jax.set_mesh`` (1 when none is set)."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty or ENVS not in mesh.axis_names else mesh.shape[ENVS]


def shard_envs(tree: Any, axis: int = 0) -> Any:
    """Constrain axis ``axis`` (the env batch) of every leaf of ``tree`` to be split over "envs".

    Called on per-run values (inside ``vmap``); ``vmap(..., spmd_axis_name="runs")``
    adds the run axis. A no-op without a mesh or with one env device.
    """
    if env_shards_in_context() == 1:
        return tree

    def constrain(x):
        spec = [None] * x.ndim
        spec[axis] = ENVS
        return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))

    return jax.tree_util.tree_map(constrain, tree)


def put_runs(tree: Any, shardings: Any, num_runs: int) -> Any:
    """Place per-run host values (leading axis = run) on the mesh, padded to ``num_runs`` runs.

    tree: numpy or local jax leaves [R, ...] (PRNG keys allowed); shardings: one
    sharding, or a tree of them like ``tree``. The padding repeats the last run
    (it fills the last devices; callers drop its results). Host numpy goes in, so
    this also builds arrays that span several processes (each gives the same values).
    """

    def put(x, sharding):
        is_key = is_prng_key(x)
        data = np.asarray(jax.random.key_data(x) if is_key else x)
        data = np.concatenate([data, np.repeat(data[-1:], num_runs - data.shape[0], axis=0)])
        placed = jax.device_put(data, sharding)
        return jax.random.wrap_key_data(placed) if is_key else placed

    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree_util.tree_map(lambda x: put(x, shardings), tree)
    return jax.tree_util.tree_map(put, tree, shardings)
