"""The host loop of a training job: compile once, then run compiled segments.

All runs (seeds x swept configurations) advance together through
``jit(vmap(run_segment))``. Between segments the host shows progress, streams
metric rows to ``metrics.csv`` (and TensorBoard / W&B), reports runs stopped by
non-finite values, saves checkpoints and reacts to Ctrl-C. Segments last about
:data:`SEGMENT_SECONDS` each and end at every checkpoint boundary; their length
never changes results (each update is the same compiled loop body).

The runs and each run's env batch are laid over every device (:mod:`jaxrl_po.layout`);
with several processes, each one runs this loop (:mod:`jaxrl_po.distributed`).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from jaxrl_po import distributed, logs, loop
from jaxrl_po.checkpoint import CheckpointError, Checkpointer, Restored
from jaxrl_po.config import ConfigError
from jaxrl_po.layout import RUNS, Layout, check_layout, choose_layout, make_mesh, on_run_axis, put_runs, run_sharding
from jaxrl_po.stop import STDOUT_CLOSED, StdoutClosed, StopAfterSegment, StopAtOnce, waiting_for_xla
from jaxrl_po.sweep import Runs, confidence_interval, rank_configs, value_text

SEGMENT_SECONDS = 1.0
"""Target wall time of one compiled segment: how often progress, metrics and Ctrl-C are handled."""
MAX_SEGMENT_ROWS = 1024
"""Most updates per segment (the length of the segment's metric buffer)."""

EXIT_OK, EXIT_NONFINITE = 0, 3


@dataclass
class JobSpec:
    """What to train and where (everything the host loop needs)."""

    algo_name: str
    config: Any
    runs: Runs
    run_dir: Path
    meta: dict  # JSON: algo, config, seeds, sweep (saved in config.json and every checkpoint)
    options: dict = field(default_factory=dict)  # run options that config.json also keeps (may change on resume)
    checkpoint_every: int = 0  # updates; 0: only at the end and on Ctrl-C
    keep_checkpoints: int = 3
    progress: bool = True
    # make_sinks(resumed_env_steps) -> [TensorBoardSink, WandbSink, ...] (process 0 only), called once
    # training is about to start; resumed_env_steps: each run's env steps at the checkpoint, None if fresh.
    make_sinks: Callable[[np.ndarray | None], list] = lambda resumed_env_steps: []
    layout: Layout | None = None  # devices per mesh axis; None: job_layout(config, runs, env_shards=None)
    compile_cache: str | None = None  # the persistent compile cache directory in use (recorded in summary.json)


class History:
    """Every metric row of every run, kept as the segments that produced them."""

    def __init__(self, num_runs: int, initial: Any | None = None):
        self.num_runs = num_runs
        self.segments: list[Any] = [] if initial is None else [initial]
        self.counts = np.zeros(num_runs, np.int64) if initial is None else (np.asarray(initial.env_steps) > 0).sum(1)

    def append(self, segment: Any) -> np.ndarray:
        """Add a segment ([R, L] leaves); returns each run's update number of its first new row."""
        first = self.counts + 1
        ran = int((np.asarray(segment.env_steps) > 0).sum(1).max())
        # Keep only the rows that ran, as copies: a slice would keep the whole segment buffer
        # (MAX_SEGMENT_ROWS rows per run) alive.
        segment = type(segment)(*[np.asarray(x)[:, :ran].copy() for x in segment])
        self.segments.append(segment)
        self.counts = self.counts + (np.asarray(segment.env_steps) > 0).sum(1)
        return first

    def stacked(self) -> Any:
        """[R, U] leaves, each run's rows first, then padding (env_steps 0, NaN) up to the longest run."""
        width = max(1, int(self.counts.max()))

        def column(*parts):
            out = np.zeros((self.num_runs, width), parts[0].dtype) if parts[0].dtype.kind in "iu" else \
                np.full((self.num_runs, width), np.nan, parts[0].dtype)
            for run in range(self.num_runs):
                rows = np.concatenate([p[run][np.asarray(s.env_steps)[run] > 0] for p, s in zip(parts, self.segments)])
                out[run, : len(rows)] = rows
            return out

        return type(self.segments[0])(*[column(*cols) for cols in zip(*self.segments)])


def rollout_buffer_bytes(config: Any) -> int:
    """A lower bound on one run's device memory: the experience buffer of one update.

    PPO keeps [num_steps, num_envs] transitions (obs and final obs, action, log-prob,
    reward, flags, values, advantages, targets); GRPO keeps [horizon rounded up to
    whole chunks, candidates] steps (obs, normalised obs, action, log-probs,
    reference log-probs, reward, mask, advantage). Parameters and optimiser state
    (:func:`training_state_bytes`) and XLA temporaries come on top.
    """
    from jaxrl_po.config import GRPOConfig
    from jaxrl_po.envs import make_vec_env
    from jaxrl_po.rollout import episode_buffer_length

    env = make_vec_env(config.env, 1)
    obs, action = env.obs_dim, env.action_spec.dim if not env.action_spec.discrete else 1
    if isinstance(config, GRPOConfig):
        horizon = config.grpo.episode_horizon(env.max_episode_steps)
        steps = episode_buffer_length(horizon, config.grpo.chunk_size) * config.num_envs * config.grpo.oversample
        return 4 * steps * (2 * obs + action + 6)
    return 4 * config.num_steps * config.num_envs * (2 * obs + action + 9)


def training_state_bytes(config: Any) -> int:
    """One run's parameters with Adam's two moments (and GRPO's reference policy), float32 each."""
    from jaxrl_po.config import GRPOConfig
    from jaxrl_po.envs import make_vec_env
    from jaxrl_po.networks import policy_for

    grpo = isinstance(config, GRPOConfig)
    env = make_vec_env(config.env, 1)
    init = functools.partial(policy_for(config, env, with_critic=not grpo).init, obs_dim=env.obs_dim)
    shapes = jax.eval_shape(init, jax.random.key(0))  # shapes only: nothing is allocated
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes))
    return 4 * count * (4 if grpo else 3)


def device_memory_bytes() -> tuple[int, str, bool]:
    """(bytes, description, shared): one accelerator's limit, or the host RAM that all CPU devices share."""
    import os

    device = jax.local_devices()[0]  # memory_stats() only works for this process's devices
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} ({device.platform})", False
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host RAM (cpu)", True


def job_layout(config: Any, num_runs: int, env_shards: int | None, cores_split: bool = False) -> Layout:
    """The mesh shape for ``num_runs`` runs of ``config``; ConfigError when the envs do not split.

    Every device, laid out by :func:`jaxrl_po.layout.choose_layout`, except on a
    CPU that ``train.split_cpu`` split into one device per core (``cores_split``):
    there whole runs go to at most ``num_runs`` cores and an env batch is only
    split when ``env_shards`` asks, because on CPU the collectives cost more than a
    second core gives one run (1 seed, 4 envs: 36 K SPS over 2 cores, 117 K on one;
    README "Throughput").
    """
    if cores_split and env_shards is None and jax.default_backend() == "cpu":
        layout = Layout(min(jax.device_count(), num_runs), 1)
    else:
        layout = choose_layout(num_runs, jax.device_count(), env_shards)
    check_layout(config, layout)
    return layout


def fewer_runs_field(num_seeds: int, num_runs: int) -> str:
    """The option that lowers the runs (``num_seeds`` x sweep points) most: ``sweep`` when its grid has more
    points than there are seeds, else ``num_seeds``."""
    return "sweep" if num_runs // num_seeds > num_seeds else "num_seeds"


def check_fits(config: Any, num_runs: int, layout: Layout, num_seeds: int) -> None:
    """Raise ConfigError before compiling when the runs' experience buffers and parameters alone
    exceed device memory. It names the option that sets the number of runs (:func:`fewer_runs_field`)
    if one run would fit, else the bigger of the two."""
    runs_per_device = layout.runs_per_device(num_runs)
    have, what, shared = device_memory_bytes()
    # CPU devices are slices of one host: their buffers all live in the same RAM.
    devices = min(layout.devices, jax.local_device_count()) if shared else 1
    buffers = rollout_buffer_bytes(config) // layout.envs  # per device, for one run
    state = training_state_bytes(config)  # on every device of the run
    need = (buffers + state) * runs_per_device * devices
    if need > have:
        gib = 2**30
        one_run = (buffers + state) * (min(layout.envs, devices) if shared else 1)
        field = fewer_runs_field(num_seeds, num_runs) if one_run <= have else "hidden_sizes" if state > buffers else "num_envs"
        split = f" (each run's envs split over {layout.envs} devices)" if layout.envs > 1 else ""
        where = f" on each of {devices} devices" if devices > 1 else " per device"
        raise ConfigError(
            field,
            f"will not fit: {runs_per_device} run(s){where}{split} need at least {need / gib:.1f} GiB (rollout buffers "
            f"{buffers * runs_per_device * devices / gib:.1f} GiB, parameters and optimiser state "
            f"{state * runs_per_device * devices / gib:.1f} GiB), but the {what} has {have / gib:.1f} GiB; "
            f"use fewer envs, steps, seeds or swept values, or a smaller network{'' if shared else ', or more devices'}",
        )


OUT_OF_MEMORY = re.compile(r"(?:(?:CUDA_ERROR_)?out[ _]of[ _]memory|failed to allocate)[^\n]*", re.IGNORECASE)
"""XLA's words for running out of device memory; also the CUDA driver's code (CUDA_ERROR_OUT_OF_MEMORY) alone."""


def out_of_memory_text(error: Exception) -> str | None:
    """XLA's own words when ``error`` is XLA running out of device memory (compiling or running), else None.

    ``"Out of memory while trying to allocate 31.27GiB ..."``, cut to 160 characters. XLA raises
    it as RESOURCE_EXHAUSTED, on a GPU perhaps inside the autotuner's NOT_FOUND error, and as
    INTERNAL ("Error dispatching computation: ... Out of memory ...") from a later program that
    takes the failed result as input. Other RESOURCE_EXHAUSTED errors (a message over a size
    limit, a kernel's shared memory) are not memory.
    """
    found = OUT_OF_MEMORY.search(str(error)) if isinstance(error, jax.errors.JaxRuntimeError) else None
    if found is None:
        return None
    text = found.group(0).strip()
    return text if len(text) <= 160 else text[:159] + "…"


@contextlib.contextmanager
def out_of_memory_as_config_error(num_runs: int, num_seeds: int, layout: Layout, resume: bool = False):
    """Turn XLA running out of device memory into a ConfigError that says what to make smaller.

    :func:`check_fits` counts buffers and parameters only; XLA's temporaries (the networks'
    activations over a whole batch) come on top, and on a GPU its autotuner already runs kernels
    while compiling. Names the option that sets the runs (:func:`fewer_runs_field`) when a device
    holds several, else ``num_envs``. XLA reports a failed allocation when a result is waited for,
    so the block must wait for what it runs. ``resume``: the run keeps its sizes, so the advice is a new run.
    """
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        xla_says = out_of_memory_text(error)
        if xla_says is None:
            raise
        runs_per_device = layout.runs_per_device(num_runs)
        have, what, _ = device_memory_bytes()
        raise ConfigError(
            fewer_runs_field(num_seeds, num_runs) if runs_per_device > 1 else "num_envs",
            f"out of device memory: {runs_per_device} run(s) per device need more than the {what}'s "
            f"{have / 2**30:.1f} GiB once XLA's temporaries are counted (XLA: {xla_says}); use fewer envs, "
            f"steps, seeds or swept values, or a smaller network"
            + (" in a new run (--resume keeps this run's sizes)" if resume else ""),
        ) from None


def compile_job(algo: loop.Algorithm, keys: jax.Array, hparams: dict,
                mesh: jax.sharding.Mesh | None = None) -> tuple[Callable, Callable, float]:
    """(init, segment, compile seconds): ahead-of-time compiled ``vmap(init)`` and ``vmap(run_segment)``.

    ``segment(state, hparams, stop_at)`` runs every run up to ``stop_at`` updates
    (or at most :data:`MAX_SEGMENT_ROWS`), returning (state, metrics [R, rows]).
    ``mesh``: the ("runs", "envs") mesh the arguments are placed on; traced under
    it, the env-batch constraints of :func:`jaxrl_po.layout.shard_envs` take effect.
    """
    rows = min(algo.max_updates, MAX_SEGMENT_ROWS)
    start_time = time.perf_counter()
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
        lowered = jax.jit(jax.vmap(algo.init, spmd_axis_name=RUNS)).lower(keys, hparams)
        with waiting_for_xla():
            init = lowered.compile()
        abstract = init.out_info if mesh is None else on_run_axis(init.out_info, mesh)
        state_sharding = jax.tree_util.tree_map(lambda s: s.sharding, abstract)
        one_segment = functools.partial(loop.run_segment, algo, length=rows)
        pinned = {} if mesh is None else {"out_shardings": (state_sharding, run_sharding(mesh))}
        lowered = (
            jax.jit(jax.vmap(one_segment, in_axes=(0, 0, None), spmd_axis_name=RUNS), donate_argnums=0, **pinned)
            .lower(abstract, hparams, np.int32(0))
        )
        with waiting_for_xla():
            segment = lowered.compile()

    def start(keys: jax.Array, hparams: dict) -> Any:
        return jax.device_put(init(keys, hparams), state_sharding)

    return start, segment, time.perf_counter() - start_time


def train_job(job: JobSpec, console, resume: bool = False) -> tuple[dict, int]:
    """Run (or, with ``resume``, continue from the latest checkpoint) every run of ``job``.

    Returns (summary, exit code). Raises :class:`CheckpointError` before
    anything in the run directory changes when the checkpoint cannot be used
    (a checkpoint of another run is found before compiling). Resuming a run
    that had finished (its summary.json says so, with the latest checkpoint)
    changes nothing and returns that summary.
    """
    from jaxrl_po import make_algorithm

    config, runs = job.config, job.runs
    num_runs = len(runs.seeds)
    num_seeds = len(set(runs.seeds))  # per config: runs are configs x seeds
    algo = make_algorithm(config)
    layout = job.layout or job_layout(config, num_runs, None)
    out_of_memory = functools.partial(out_of_memory_as_config_error, num_runs, num_seeds, layout, resume)
    checkpointer = Checkpointer(job.run_dir, job.keep_checkpoints, create=not resume)
    sessions_before: list[dict] = []  # the sittings that trained the checkpoint this one resumes
    if resume:
        latest, saved_meta = check_checkpoint_meta(checkpointer, job.meta)
        summary = logs.read_summary(job.run_dir)
        if logs.finished_at(summary, latest):
            console.print(f"{job.run_dir} already finished training (checkpoint {latest}); nothing to do")
            return summary, EXIT_NONFINITE if summary.get("stopped_nonfinite") else EXIT_OK
        sessions_before = logs.sessions_before_resume(summary, saved_meta, latest)
    with StopAtOnce():  # until StopAfterSegment below takes the stop signals over
        console.print("compiling...")
        if logs.stdout_gone(console):  # nothing to save yet (logs.StdoutGuard)
            raise StdoutClosed
        mesh = make_mesh(layout)
        keys, hparams = put_runs((runs.keys, runs.hparams), run_sharding(mesh), layout.padded_runs(num_runs))
        with out_of_memory():
            init, segment, compile_s = compile_job(algo, keys, hparams, mesh)
            with waiting_for_xla():
                state = jax.block_until_ready(init(keys, hparams))
        row_shape = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((), s.dtype), segment.out_info[1])
        # Every process runs this loop on the same global arrays; only process 0 writes files and prints.
        primary = distributed.is_primary()
        reported_failures: dict[int, dict] = {}
        if resume:
            real_runs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((num_runs,) + x.shape[1:], x.dtype), state)
            restored = restore(checkpointer, latest, saved_meta, real_runs, row_shape)
            # Restored leaves are host values: place them like a fresh state (same shapes, same devices), in
            # its memory: the fresh state is dropped first, so a run that fit before fits again.
            placement = jax.tree_util.tree_map(lambda x: x.sharding, state)
            del state
            with out_of_memory(), waiting_for_xla():
                state = jax.block_until_ready(put_runs(restored.state, placement, layout.padded_runs(num_runs)))
            history = History(num_runs, restored.history)
            start_rows = restored.history
            console.print(f"resumed from {checkpointer.directory / str(restored.step)} (update {restored.step})")
            # Runs that had already stopped on non-finite values stay stopped and reported (exit code 3).
            _report_failures(console, restored.history, np.ones(num_runs, np.int64), runs, reported_failures)
        else:
            start_rows = empty_history(row_shape, num_runs)
            history = History(num_runs, start_rows)  # rows of no update: a stop before the first segment saves
    start_env_steps = distributed.fetch(state.env_steps)[:num_runs]
    interrupted = False
    seg_len = 1
    every = job.checkpoint_every
    is_running = jax.jit(jax.vmap(functools.partial(loop.running, algo)))
    start_steps = _logged_env_steps(start_rows)

    def sessions(unfinished: bool) -> list[dict]:
        """Every sitting's record: the earlier ones, then this one's until now (compile and training seconds,
        env steps as the metric rows count them, so a discarded non-finite update's steps count too; whether
        it ends with training unfinished)."""
        this = {"compile_s": compile_s, "train_s": time.perf_counter() - loop_start,
                "env_steps": _logged_env_steps(history.stacked()) - start_steps, "interrupted": unfinished,
                "mesh": layout._asdict()}  # a resumed run may move to other devices
        return sessions_before + [this]

    # From here on a stop signal saves a checkpoint (after the files below are written, so the run can resume).
    with StopAfterSegment(console) as interrupt:
        csv_sink = logs.MetricsCSV(job.run_dir / "metrics.csv", row_shape._fields, runs.seeds,
                                   {f"hp_{n}": [s[n] for s in runs.settings] for n in job.meta["sweep"]})
        # Only W&B can fail to start; then every process stops, not just process 0.
        started = distributed.primary_only(lambda: job.make_sinks(start_env_steps if resume else None),
                                           ConfigError("wandb", "process 0 cannot start a W&B run"))
        writers = [csv_sink] + started if primary else []
        if primary:
            csv_sink.rewrite(start_rows)
            logs.write_json(job.run_dir / "config.json", {**job.meta, "options": job.options})
        progress = logs.Progress(num_runs, config.total_timesteps, start_steps=start_env_steps,
                                 stream=console.file) if job.progress and primary else None
        loop_start = time.perf_counter()  # train_s: the loop's wall time, host work between segments included
        while True:
            update = distributed.fetch(state.update)[:num_runs]
            active = distributed.fetch(is_running(state))[:num_runs]
            if not active.any():
                break
            if distributed.any_process(interrupt.requested or logs.stdout_gone(console)):
                interrupted = True
                break
            current = int(update[active].max())
            stop_at = current + seg_len
            if every:
                stop_at = min(stop_at, (current // every + 1) * every)
            stop_at = distributed.from_primary(stop_at)  # segment lengths are timed on each process
            start = time.perf_counter()
            with out_of_memory():  # checkpoints already saved stay
                state, rows = segment(state, hparams, np.int32(stop_at))
                rows = jax.tree_util.tree_map(lambda x: distributed.fetch(x)[:num_runs], rows)
            elapsed = time.perf_counter() - start
            done = int((rows.env_steps > 0).sum(1).max())
            # Next segment: about SEGMENT_SECONDS long, growing at most 4x at a time.
            seg_len = int(np.clip(done * SEGMENT_SECONDS / max(elapsed, 1e-6), 1, 4 * max(done, 1)))
            first_update = history.append(rows)
            for sink in writers:
                sink.append(rows, first_update)
            _report_failures(console, rows, first_update, runs, reported_failures)
            new_update = distributed.fetch(state.update)[:num_runs]
            if progress is not None:
                progress.report(distributed.fetch(state.env_steps)[:num_runs], int(new_update.max()), _latest(rows))
            if every and np.any((new_update % every == 0) & (new_update > update)):
                # A sitting killed after this checkpoint (SIGKILL, a second Ctrl-C) writes no summary: its record
                # up to here goes on from the checkpoint (logs.sessions_before_resume).
                unfinished = bool(distributed.fetch(is_running(state))[:num_runs].any())
                _save(checkpointer, state, history, {**job.meta, "sessions": sessions(unfinished)},
                      int(new_update.max()), num_runs)
        if progress is not None:
            progress.close()
        every_session = sessions(interrupted)
        step = int(distributed.fetch(state.update)[:num_runs].max())
        path = _save(checkpointer, state, history, {**job.meta, "sessions": every_session}, step, num_runs)

    this_session = every_session[-1]
    summary = summarize(job, history.stacked(), reported_failures, compile_s, this_session["train_s"],
                        this_session["env_steps"], layout, interrupted)
    summary["checkpoint"] = str(path)
    summary["sessions"] = every_session
    if primary:
        logs.write_json(job.run_dir / "summary.json", summary)
    for sink in writers[1:]:
        sink.close()
    if interrupted:
        stopped = f"interrupted at update {step}; checkpoint {path}\ncontinue with: python -m jaxrl_po.train " \
                  f"--resume {job.run_dir}"
        if interrupt.requested:
            console.print(f"[yellow]{stopped}[/]")
            return summary, 128 + interrupt.signum
        if primary:  # stdout's reader went away: say it where it can still be read
            print(f"stdout closed: {stopped}", file=sys.stderr)
        return summary, STDOUT_CLOSED
    logs.print_summary(console, summary, runs.seeds, runs.settings if job.meta["sweep"] else None)
    return summary, EXIT_NONFINITE if reported_failures else EXIT_OK


def check_checkpoint_meta(checkpointer: Checkpointer, meta: dict) -> tuple[int, dict]:
    """(step, saved metadata) of the latest checkpoint, after checking that it is of the run ``meta``
    describes (algo, config, seeds, sweep).

    Cheap (reads its metadata only), so a resume can be refused before compiling.
    """
    steps = checkpointer.steps()
    if not steps:
        raise CheckpointError(f"no checkpoint in {checkpointer.directory}")
    saved_meta = checkpointer.read_meta(steps[-1])
    # Only the run's own entries: the checkpoint's records (num_rows, sessions; a later version's) are not the run.
    diff = sorted(k for k in meta if saved_meta.get(k) != meta[k])
    if diff:
        shown = ", ".join(f"{k}: checkpoint {saved_meta.get(k)!r} vs run {meta[k]!r}" for k in diff[:3])
        raise CheckpointError(f"checkpoint {checkpointer.directory / str(steps[-1])} is from another run ({shown})")
    return steps[-1], saved_meta


def restore(checkpointer: Checkpointer, step: int, saved_meta: dict, abstract_state: Any, row_shape: Any) -> Restored:
    """Checkpoint ``step``, with the metadata :func:`check_checkpoint_meta` checked and returned.

    abstract_state: the batched state of the real runs (ShapeDtypeStructs or arrays).
    """
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_state)
    num_runs = jax.tree_util.tree_leaves(abstract)[0].shape[0]
    return checkpointer.restore(step, saved_meta, abstract, row_shape, num_runs)


class TrainedRuns(NamedTuple):
    """The runs of a run directory as its latest checkpoint left them (for evaluation)."""

    algo_name: str
    config: Any
    seeds: list[int]
    settings: list[dict[str, float]]  # swept values per run ({} without a sweep)
    state: Any  # batched training state, leading axis = run
    step: int  # updates done at the checkpoint
    metrics: Any  # every metric row up to the checkpoint: each leaf [run, update]


def load_trained(run_dir: Path) -> TrainedRuns:
    """Read ``config.json`` and the latest checkpoint of ``run_dir``.

    Raises :class:`CheckpointError` (or ConfigError for a bad config.json) with a readable message.
    """
    from jaxrl_po import make_algorithm
    from jaxrl_po.sweep import make_runs

    try:
        data, config = logs.read_run_config(run_dir)
        meta = {k: v for k, v in data.items() if k != "options"}
        runs = make_runs(config, meta["seeds"], meta["sweep"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{run_dir} is not a run directory ({Path(run_dir) / 'config.json'}: "
                              f"{logs.error_reason(err)})") from None
    algo = make_algorithm(config)
    abstract = jax.eval_shape(jax.vmap(algo.init), runs.keys, runs.hparams)
    first = lambda tree: jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tree)
    row_shape = jax.eval_shape(algo.update, first(abstract), first(runs.hparams))[1]
    checkpointer = Checkpointer(Path(run_dir), create=False)
    restored = restore(checkpointer, *check_checkpoint_meta(checkpointer, meta), abstract, row_shape)
    return TrainedRuns(data["algo"], config, runs.seeds, runs.settings, restored.state, restored.step, restored.history)


def empty_history(row_shape: Any, num_runs: int) -> Any:
    return type(row_shape)(*[np.zeros((num_runs, 0), s.dtype) for s in row_shape])


def _logged_env_steps(rows: Any) -> int:
    """Env steps of every run as its metric rows ([R, U] leaves) last logged them, summed."""
    return int(np.asarray(rows.env_steps).max(axis=1, initial=0).sum())


def _latest(rows: Any) -> np.ndarray:
    """f[R]: each run's last finite episode return in a segment (NaN if none)."""
    returns = np.where(rows.env_steps > 0, rows.episode_return, np.nan)
    out = np.full(returns.shape[0], np.nan)
    for run, values in enumerate(returns):
        finite = values[np.isfinite(values)]
        if finite.size:
            out[run] = finite[-1]
    return out


def _save(checkpointer: Checkpointer, state, history: History, meta: dict, step: int, num_runs: int) -> Path:
    """Checkpoint the real runs only (the padding that filled the last devices is dropped); every process calls it."""
    real = jax.tree_util.tree_map(lambda x: x[:num_runs], distributed.fetch(state))
    return checkpointer.save(step, real, history.stacked(), meta)


def _report_failures(console, rows: Any, first_update: np.ndarray, runs: Runs, reported: dict[int, dict]) -> None:
    """Print each run that an update with non-finite values stopped (once), and record it."""
    codes = np.asarray(rows.nonfinite)
    for run in np.flatnonzero(codes.max(1) > 0):
        if run in reported:
            continue
        i = int(np.flatnonzero(codes[run] > 0)[0])
        what = loop.describe_nonfinite(int(codes[run, i]))
        update = int(first_update[run] + i)
        reported[run] = {"seed": runs.seeds[run], "hparams": runs.settings[run], "update": update, "nonfinite": what}
        setting = "".join(f" {k}={value_text(v)}" for k, v in runs.settings[run].items())
        console.print(
            f"[red]seed {runs.seeds[run]}{setting}: non-finite {what} at update {update}; "
            f"that run stopped and keeps its last good state (update {update - 1})[/]"
        )


def summarize(job: JobSpec, metrics: Any, failures: dict, compile_s: float, train_s: float, session_steps: int,
              layout: Layout, interrupted: bool) -> dict[str, Any]:
    """summary.json: final returns per run (None for runs stopped by non-finite values), timing, ranking.

    ``train_s`` and ``session_steps`` cover this invocation only (after a resume: the resumed part).
    """
    runs, config = job.runs, job.config
    per_run = logs.final_returns(metrics.episode_return, metrics.env_steps)
    for run in failures:
        per_run[run] = np.nan
    finite = per_run[~np.isnan(per_run)]
    steps_per_run = metrics.env_steps.max(axis=1)
    total_steps = int(steps_per_run.sum())
    summary = {
        "algo": job.algo_name,
        "env": config.env,
        "num_seeds": len(job.meta["seeds"]),
        "seeds": runs.seeds,
        "final_return_mean": logs.none_if_nan(float(finite.mean())) if finite.size else None,
        "final_return_std": float(finite.std()) if finite.size else None,
        # Not for a sweep: its configurations share the seeds, so pooled they are no sample (see ranking).
        "final_return_ci95": logs.none_if_nan(confidence_interval(finite)[1]) if finite.size and not job.meta["sweep"]
        else None,
        "final_return_per_seed": [logs.none_if_nan(float(x)) for x in per_run],
        "total_timesteps": int(steps_per_run.max()),
        "total_env_steps": total_steps,
        "num_updates": int((metrics.env_steps > 0).sum(axis=1).max()),
        "sps": session_steps / train_s if train_s > 0 else None,
        "compile_s": compile_s,
        "train_s": train_s,
        "total_s": compile_s + train_s,
        "num_devices": layout.devices,
        "num_processes": jax.process_count(),
        "mesh": layout._asdict(),  # devices per mesh axis: {"runs": R, "envs": E}
        "device": str(jax.devices()[0].device_kind),
        "versions": logs.package_versions(),
        "run_dir": str(job.run_dir),
        "interrupted": interrupted,
        "stopped_nonfinite": list(failures.values()),
    }
    if job.compile_cache:
        summary["compile_cache"] = job.compile_cache
    if hasattr(metrics, "padded_steps"):  # GRPO: env steps run after episodes ended
        summary["padded_env_steps"] = int(np.nansum(metrics.padded_steps))
    if job.meta["sweep"]:
        summary["sweep"] = job.meta["sweep"]
        summary["run_settings"] = runs.settings
        summary["ranking"] = rank_configs(runs.settings, per_run)
    return summary
