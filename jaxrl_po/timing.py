"""Compile apart from run: how the CLI and the benchmarks time a jitted program."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from jaxrl_po.layout import Layout


def compile_then_run(fn: Callable, *args: Any) -> tuple[Any, float, float]:
    """(output, compile_s, run_s) of ``jax.jit(fn)(*args)``.

    compile_s covers tracing, lowering and XLA compilation (``.lower().compile()``);
    run_s is measured after it and stops at ``block_until_ready``. A first stop signal
    lets XLA finish what it is doing (``stop.waiting_for_xla``).
    """
    import jax

    from jaxrl_po.stop import waiting_for_xla

    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    with waiting_for_xla():
        compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    with waiting_for_xla():
        output = jax.block_until_ready(compiled(*args))
    return output, compile_s, time.perf_counter() - start


def compile_then_run_over_devices(fn: Callable, keys: Any, layout: Layout) -> tuple[Any, float, float]:
    """:func:`compile_then_run` of ``jax.vmap(fn)`` over ``keys`` (one run each), on the mesh of ``layout``.

    ``layout``: e.g. the CLI's own choice from ``runner.job_layout``. The runs
    are placed as the CLI places them (split over the "runs" axis, padded to a
    multiple of ``layout.runs``); the output keeps the real runs only.
    """
    import jax

    from jaxrl_po.layout import RUNS, make_mesh, put_runs, run_sharding

    num_runs = keys.shape[0]
    mesh = make_mesh(layout)
    keys = put_runs(keys, run_sharding(mesh), layout.padded_runs(num_runs))
    with jax.set_mesh(mesh):
        out, compile_s, run_s = compile_then_run(jax.vmap(fn, spmd_axis_name=RUNS), keys)
    return jax.tree_util.tree_map(lambda x: x[:num_runs], out), compile_s, run_s


def machine_info() -> dict:
    """What a benchmark ran on: platform, device, device count, CPU model and count, jax/jaxlib versions, date."""
    import datetime
    import os
    import platform
    import subprocess

    import jax
    import jaxlib

    device = jax.devices()[0]
    info = {"platform": device.platform, "device": device.device_kind, "device_count": jax.device_count(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    try:  # the CPU's model name, where lscpu exists (Linux)
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info["model_name"] = next(l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return info
