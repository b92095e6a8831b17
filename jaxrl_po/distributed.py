"""One job over several processes (hosts): start-up, who writes, agreeing on host decisions.

Every process runs the same host loop over global arrays: the mesh of
:mod:`jaxrl_po.layout` spans the devices of all processes. Host decisions that
feed the compiled program (where a segment stops, whether to stop) must be the
same everywhere, or the processes would run different programs and their
collectives would never meet: they are taken from process 0 or agreed on.
Only process 0 writes the run directory and prints; checkpoints are saved by
every process together (orbax writes host values from process 0 only).

With one process every helper here is a plain pass-through.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxrl_po.config import ConfigError

T = TypeVar("T")


def initialize(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
    """``jax.distributed.initialize``; must come before anything else touches a JAX backend.

    Values left None come from JAX's own detection: ``JAX_COORDINATOR_ADDRESS``,
    SLURM, Open MPI, Kubernetes or Cloud TPU environments.
    """
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def is_primary() -> bool:
    """True on the process that writes files and prints (process 0)."""
    return jax.process_index() == 0


def is_prng_key(x: Any) -> bool:
    """Whether ``x`` is an array (or abstract value) of typed PRNG keys."""
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def fetch(tree: Any) -> Any:
    """A numpy copy of every leaf, also of arrays spread over several processes; PRNG keys as their uint32 data."""

    def one(x):
        if is_prng_key(x):
            x = jax.random.key_data(x)
        if x.is_fully_addressable:
            # A copy: on CPU np.asarray can alias a device buffer that the next (donating) segment reuses.
            return np.array(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)


def from_primary(value: Any) -> Any:
    """Process 0's ``value`` (a number), on every process."""
    if jax.process_count() == 1:
        return value
    return multihost_utils.broadcast_one_to_all(np.asarray(value)).item()


def primary_only(action: Callable[[], T], failure: ConfigError) -> T | None:
    """``action()`` on process 0 alone: its result there, None elsewhere.

    A ConfigError from it stops every process, not just process 0 (the others
    would wait for it forever): process 0 raises that error, the others ``failure``.
    """
    result, problem = None, None
    if is_primary():
        try:
            result = action()
        except ConfigError as err:
            problem = err
    if not from_primary(int(problem is None)):
        raise problem or failure
    return result


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (e.g. Ctrl-C reached one of them)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.bool_(flag))))
