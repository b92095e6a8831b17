"""Compile apart from run: how the CLI and the benchmarks time a jitted program."""

from __future__ import annotations

import time
from typing import Any, Callable


def compile_then_run(fn: Callable, *args: Any) -> tuple[Any, float, float]:
    """(output, compile_s, run_s) of ``jax.jit(fn)(*args)``.

    compile_s covers tracing, lowering and XLA compilation (``.lower().compile()``);
    run_s is measured after it and stops at ``block_until_ready``.
    """
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    output = jax.block_until_ready(compiled(*args))
    return output, compile_s, time.perf_counter() - start
