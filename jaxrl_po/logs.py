"""Host-side output: live progress, the run directory files, the final table.

(Named ``logs`` rather than ``logging`` so that running a file of this package
directly can never shadow the standard library's ``logging``.)
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import secrets
import stat
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table


class Progress:
    """A live progress line, updated between compiled segments.

    Progress is measured in env steps (cumulative per run), which works for
    PPO's fixed updates and GRPO's alive-step budget. On a terminal the line is
    redrawn in place, without its column padding where the terminal is too narrow
    for it (a line that wraps leaves a copy behind at every redraw); otherwise (CI,
    pipes) a plain line is printed about every 10% of training, and the last one at
    the end, so a run is never a silent wait.
    """

    def __init__(self, num_runs: int, steps_per_run: int, stream=None, start_steps: np.ndarray | None = None):
        self.num_runs = num_runs
        self.steps_per_run = steps_per_run
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.start = (time.perf_counter(), 0 if start_steps is None else int(np.sum(start_steps)))
        self.next_plain_report = 0.1
        # Each run's return of its latest finished episodes, kept across reports: long episodes
        # (Freeway: 2,500 steps) end in few segments, and the line should not say n/a in between.
        self.last_return = np.full(num_runs, np.nan)
        self.unprinted = None  # the latest line, if a pipe has not had it yet
        self.drawn = 0  # length of the line now on the terminal

    def report(self, env_steps: np.ndarray, update: int, latest_return: np.ndarray) -> None:
        """env_steps: i[R] cumulative per run; latest_return: f[R] from this segment (NaN where none finished)."""
        self.last_return = np.where(np.isnan(latest_return), self.last_return, latest_return)
        total = self.steps_per_run * self.num_runs
        # GRPO's last update may pass the budget: the fraction stops at 100%, the steps shown do not.
        fraction = int(np.minimum(env_steps, self.steps_per_run).sum()) / total
        elapsed = time.perf_counter() - self.start[0]
        sps = (int(np.sum(env_steps)) - self.start[1]) / elapsed if elapsed > 0 else 0.0
        known = self.last_return[~np.isnan(self.last_return)]
        ret = f"{known.mean():.1f}" if known.size else "n/a"
        steps = int(np.sum(env_steps))
        line = (
            f"{fraction:5.0%}  update {update:>6}  env steps {steps:>13,}  "
            f"SPS {sps:>11,.0f}  mean return {ret:>8}"
        )
        if self.live:
            width = self.terminal_width() - 1  # a line that fills the last column wraps on some terminals
            if len(line) > width:  # the same without the padding that aligns the lines of a pipe
                line = f"{fraction:.0%}  update {update}  env steps {steps:,}  SPS {sps:,.0f}  mean return {ret}"
                line = line[:width]
            self.stream.write("\r" + line.ljust(min(self.drawn, width)))  # spaces over a longer line's end
            self.drawn = len(line)
        elif fraction + 1e-9 >= self.next_plain_report:
            self.stream.write(line + "\n")
            self.next_plain_report = math.floor(fraction * 10 + 1) / 10
            line = None
        self.unprinted = line
        self.stream.flush()

    def terminal_width(self) -> int:
        """Columns of the terminal the line is drawn on, asked at each redraw (it may be resized); 80 if unknown."""
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError):
            return 80

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
        elif self.unprinted:  # e.g. the end came at 97%, or a run stopped on non-finite values
            self.stream.write(self.unprinted + "\n")
        self.stream.flush()


def error_reason(err: BaseException) -> str:
    """An error as the reason given after the file it concerns: an OSError's ``strerror`` (its full text
    repeats the path), any other error as it prints."""
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


WANDB_DIR = "wandb"
"""W&B's own files in a run directory (``wandb.init(dir=RUN_DIR)``); each W&B run has its own directory there."""


def make_run_dir(path: str | os.PathLike) -> bool:
    """Take a fresh run directory for one run; returns whether it was made here (else it existed).

    Refuses an unwritable place, or an existing directory that holds anything
    but W&B's files: a run whose W&B run could not start leaves only W&B's logs,
    and running again there adds a W&B run beside them. Taking it is
    atomic: of two runs started at once on the same directory, exactly one gets
    it (the one whose ``mkdir`` of the checkpoint directory succeeds), so they
    never mix their files. Raises ``OSError``/``FileExistsError`` with a readable message.
    """
    from jaxrl_po.checkpoint import CHECKPOINT_DIR

    run_dir = Path(path)
    taken = FileExistsError(f"{run_dir} already exists and is not empty; pick another --run-dir")
    if run_dir.exists() and (not run_dir.is_dir() or any(p.name != WANDB_DIR for p in run_dir.iterdir())):
        raise taken
    made = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        (run_dir / CHECKPOINT_DIR).mkdir()
    except FileExistsError:
        raise taken from None
    return made


_held_locks: list[int] = []  # descriptors of the run directories this process has locked


def lock_run_dir(run_dir: Path) -> bool:
    """Lock ``run_dir`` for this process, so that no second process trains there at the same time
    (a second ``--resume`` of a run, or a ``--resume`` of a run that is still going). Returns False if
    another process holds it. The lock (``flock`` on the directory itself: no file is added) lasts
    until :func:`unlock_run_dirs` or the process's end, however it ends; where the platform or file
    system has no such locks, none is taken.
    """
    try:
        import fcntl
        fd = os.open(run_dir, os.O_RDONLY)
    except (ImportError, OSError):
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    except OSError:  # e.g. a file system that cannot lock a directory
        os.close(fd)
        return True
    _held_locks.append(fd)
    return True


def unlock_run_dirs() -> None:
    """Release every lock :func:`lock_run_dir` took (closing the descriptor releases its ``flock``)."""
    while _held_locks:
        os.close(_held_locks.pop())


def read_run_config(run_dir: Path) -> tuple[dict[str, Any], Any]:
    """(config.json's contents, the config it describes) of a run directory.

    Raises OSError, ValueError, KeyError, TypeError or ConfigError when the file
    is missing or is not a run's config (callers turn these into their own errors).
    The config is validated, and ``seeds`` (uint32 seeds), ``sweep``
    (:func:`jaxrl_po.sweep.check_grid`) and ``options`` are checked, so a damaged
    file is named as such rather than as a flag the user never gave.
    """
    from jaxrl_po.config import check_seed, config_class, from_dict
    from jaxrl_po.sweep import check_grid

    data = read_json(Path(run_dir) / "config.json")
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping, got {type(data).__name__}")
    config = from_dict(config_class(data["algo"]), data)  # from_dict ignores algo, seeds, sweep, options
    config.validate()
    seeds, sweep = data["seeds"], data["sweep"]
    if not (isinstance(seeds, list) and seeds):
        raise ValueError(f"seeds must be a non-empty list, got {seeds!r}")
    for seed in seeds:
        check_seed(seed, "seeds")
    if not (isinstance(sweep, dict) and all(isinstance(v, list) for v in sweep.values())):
        raise ValueError(f"sweep must map names to lists of values, got {sweep!r}")
    check_grid(config, sweep)
    if not isinstance(data.get("options", {}), dict):
        raise ValueError(f"options must be a mapping, got {data['options']!r}")
    return data, config


def read_json(path: str | Path) -> Any:
    """A JSON file's contents. Raises OSError, or ValueError for a damaged file, also one nested too deeply for
    Python's parser (its RecursionError came out as a traceback)."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def read_summary(run_dir: Path) -> dict:
    """``run_dir/summary.json`` ({} when there is none or it cannot be read)."""
    try:
        summary = read_json(Path(run_dir) / "summary.json")
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def written_with(summary: dict, step: int) -> bool:
    """Whether a run's ``summary`` (:func:`read_summary`) was written with checkpoint ``step``, by the sitting that
    saved it (a run's steps only grow, so no other sitting ends at that step)."""
    return Path(str(summary.get("checkpoint"))).name == str(step)


def finished_at(summary: dict, step: int) -> bool:
    """Whether a run's ``summary`` (:func:`read_summary`) says training ended (not interrupted) with checkpoint ``step``."""
    return summary.get("interrupted") is False and written_with(summary, step)


def sessions_before_resume(summary: dict, saved_meta: dict, step: int) -> list[dict]:
    """The sittings (invocations) that trained checkpoint ``step``, oldest first, for a resume from it.

    Each is ``{compile_s, train_s, env_steps, interrupted, mesh}``. ``summary``: the run's summary.json
    (:func:`read_summary`); ``saved_meta``: the checkpoint's metadata. The summary's list when the sitting
    that saved the checkpoint wrote it (stopped by Ctrl-C or SIGTERM: its record runs to the stop); else
    the checkpoint's own (a sitting killed after saving it wrote no summary). A checkpoint of a version
    that did not record sittings: the summary's list, in which a killed sitting is missing; a summary of
    such a version that did not either counts as one sitting with unknown env steps.
    """
    if "sessions" in saved_meta and not written_with(summary, step):
        return saved_meta["sessions"]
    if not summary:
        return []
    if "sessions" in summary:
        return summary["sessions"]
    return [{"compile_s": summary.get("compile_s"), "train_s": summary.get("train_s"), "env_steps": None,
             "interrupted": summary.get("interrupted")}]


def write_json(path: Path, data: Any, allow_nan: bool = False) -> None:
    """Write JSON atomically (:func:`write_text`). ``allow_nan``: write NaN as JSON's non-standard ``NaN`` (a
    benchmark's measured NaN is a result); else a NaN is an error."""
    write_text(path, json.dumps(data, indent=2, allow_nan=allow_nan, default=_json_default) + "\n")


def replace_whole(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash, a full disk or a stop never leaves half a file, and the file it replaces is kept until the
    new one is whole. The temporary name is unique to the call (two writers of one path never share it)
    and keeps ``path``'s suffix, by which matplotlib and the GIF writer choose the format. A file replaced
    keeps its permission bits (writable by its owner: a metrics.csv rewritten is appended to next).
    A symbolic link at ``path`` is replaced, not written through: the file it points to, perhaps in a
    shared or content-addressed store, is left as it was.
    """
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        write(tmp)
        with contextlib.suppress(OSError):  # best effort: no file there yet, or a filesystem without modes
            replaced = os.lstat(path)
            if stat.S_ISREG(replaced.st_mode):
                os.chmod(tmp, replaced.st_mode & 0o777 | stat.S_IWUSR)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half file left beside the whole one
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (:func:`replace_whole`)."""
    replace_whole(path, lambda tmp: tmp.write_text(text))


def saved_record(path: Path) -> dict | None:
    """The JSON object a benchmark saved at ``path``: None if there is no file, ``{}`` if it does not parse (a file
    is still there, and must not be replaced unasked)."""
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


NOT_RESULTS = "a file that is not this benchmark's results"  # what a refusal says an unreadable file holds


def saved_entries(record: dict | None, key: str, fields: Sequence[str]) -> list[dict]:
    """``record[key]`` when it is a list of dicts that each have ``fields`` (rows a run can add to), else ``[]``:
    a file that is not such a record is replaced whole, never merged."""
    entries = record.get(key) if record else None
    readable = isinstance(entries, list) and all(isinstance(e, dict) and all(f in e for f in fields) for e in entries)
    return entries if readable else []


def named(noun: str, names: Sequence[str]) -> str:
    """``the row a`` or ``the rows a, b``: the records a refusal names."""
    return f"the {noun}{'s' * (len(names) > 1)} {', '.join(names)}"


def saved_on(record: dict) -> str:
    """``made 2026-11-12``: the day a benchmark record was made, from its ``machine_info()``."""
    date = record.get("machine", {}).get("date") if isinstance(record.get("machine"), dict) else None
    return f"made {date[:10]}" if isinstance(date, str) else "date unknown"


def replace_refusal(flag: str, path: Path, held: str, count: int = 1, record: dict | None = None) -> str:
    """The error for a benchmark run that would replace ``held`` (``count`` records: what ``path`` holds) and was
    not given ``--overwrite``; ``record``, the JSON at ``path``, adds the day it was made. Raised before any work,
    so a refusal costs nothing."""
    if record is not None:
        held = f"{held} ({saved_on(record)})"
    return (f"{flag}: {path} already holds {held}. Pass --overwrite to replace {'it' if count == 1 else 'them'}, "
            f"or give a trial run another {flag}")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class MetricsCSV:
    """``metrics.csv``: one row per update per run, appended segment by segment while training.

    Columns: seed, the ``extra`` columns (e.g. swept hyperparameters), update,
    env_steps, then every other metric field.
    """

    def __init__(self, path: Path, fields: Sequence[str], seeds: Sequence[int], extra: dict[str, Sequence] | None = None):
        self.path = path
        self.fields = [f for f in fields if f != "env_steps"]
        self.seeds = list(seeds)
        self.extra = extra or {}

    def rewrite(self, history: Any) -> None:
        """Replace the file (atomically) with the header and every row of ``history`` ([R, U] leaves)."""
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["seed", *self.extra, "update", "env_steps", *self.fields])
                writer.writerows(self._rows(history, np.zeros(len(self.seeds), np.int64)))

        replace_whole(self.path, write)

    def append(self, segment: Any, first_update: np.ndarray) -> None:
        """Add a segment's rows ([R, L] leaves); ``first_update``: i[R] update number of each run's row 0."""
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerows(self._rows(segment, first_update - 1))

    def _rows(self, metrics: Any, updates_before: np.ndarray):
        # Update-major (all runs' update 1, then update 2, ...) so that a file streamed segment by
        # segment and one rewritten from the whole history are identical.
        arrays = [np.asarray(getattr(metrics, f)) for f in self.fields]
        env_steps = np.asarray(metrics.env_steps)
        extra = [[values[run] for values in self.extra.values()] for run in range(env_steps.shape[0])]
        for i, run in zip(*np.nonzero(env_steps.T > 0)):  # rows a run never reached have env_steps 0
            row = [self.seeds[run], *extra[run], int(updates_before[run] + i + 1), int(env_steps[run, i])]
            yield row + [_csv_number(a[run, i]) for a in arrays]


def _csv_number(x: Any) -> str:
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.6g}"


def final_returns(episode_return: np.ndarray, env_steps: np.ndarray) -> np.ndarray:
    """Per run: mean episode return over the last 10% of its updates (at least one), NaN-aware.

    episode_return, env_steps: [num_runs, num_updates]; rows with env_steps 0 never ran.
    Returns f[num_runs] (NaN where no episode finished in that window).
    """
    out = np.full(episode_return.shape[0], np.nan)
    for run, (returns, steps) in enumerate(zip(episode_return, env_steps)):
        ran = returns[steps > 0]
        tail = ran[-max(1, len(ran) // 10):]
        tail = tail[~np.isnan(tail)]
        if tail.size:
            out[run] = tail.mean()
    return out


def package_versions() -> dict[str, str | None]:
    """Python's and the installed versions of jaxrl_po and the packages its numbers depend on.

    Recorded in ``summary.json``: results are bit-identical only under the same versions.
    """
    versions = {"python": platform.python_version()}
    for name in ("jaxrl_po", "jax", "jaxlib", "flax", "optax", "gymnax", "distrax", "chex"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def mean_ci_text(mean: float | None, half: float | None) -> str:
    """'-72.7 ± 3.5', '0.93 ± 0.04'; 'n/a' without a mean, the mean alone without a CI (one seed).

    Decimals, from 1 to 4: down to the CI's first significant digit (without a CI, or with one of 0, the
    mean's third), so that small returns (Catch's are in -1 .. 1) do not all read 0.9 ± 0.0.
    """
    if mean is None:
        return "n/a"
    digit = lambda x: math.floor(math.log10(abs(x))) if x and math.isfinite(x) else 0  # of its first significant digit
    decimals = int(np.clip(-digit(half) if half else 2 - digit(mean), 1, 4))
    return f"{mean:.{decimals}f}" + ("" if half is None else f" ± {half:.{decimals}f}")


def downsample_curve(returns: np.ndarray, steps: np.ndarray, points: int) -> dict[str, list]:
    """One seed's learning curve at <= ``points`` of the updates that ran (``steps > 0``), for a JSON record.

    returns, steps: [U]. Returns {"env_steps": [int], "episode_return": [float | None]}.
    """
    ran = steps > 0
    returns, steps = returns[ran], steps[ran]
    idx = np.unique(np.linspace(0, len(steps) - 1, min(points, len(steps))).astype(int))
    return {"env_steps": [int(s) for s in steps[idx]],
            "episode_return": [none_if_nan(round(float(r), 3)) for r in returns[idx]]}


@contextlib.contextmanager
def without_mplbackend():
    """``os.environ`` without ``MPLBACKEND`` inside the block, as it was after: for the CLIs that draw, which
    draw with Agg and need no backend. A name matplotlib does not know failed its import with a traceback."""
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


def make_console(quiet: bool = False) -> Console:
    """The CLIs' console, on a :class:`StdoutGuard`. soft_wrap: rich leaves long lines and table titles whole
    (the terminal wraps them, a log file keeps them on one line) instead of breaking them at 80 columns in a pipe."""
    return Console(file=StdoutGuard(sys.stdout), quiet=quiet, soft_wrap=True)


class StdoutGuard:
    """A CLI's stdout that outlives its reader (``... | head -3``, a ``tee`` that died): after a write fails
    with BrokenPipeError the rest is dropped, and :attr:`reader_gone` tells the runner to stop as at SIGTERM,
    with a checkpoint. Before, the progress line's write was a traceback mid-training, and nothing since the
    last checkpoint was kept; rich alone ends the process (SystemExit(1)) at a broken pipe."""

    def __init__(self, stream):
        self.stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self._drop_the_rest()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._drop_the_rest()

    def _drop_the_rest(self) -> None:
        self.reader_gone = True
        try:  # what the stream still buffers would fail again when Python exits ("Exception ignored")
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # a stream without a file descriptor
            pass

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: rich and Progress ask for them
        return getattr(self.stream, name)


def stdout_gone(console: Console) -> bool:
    """Whether the reader of ``console``'s stdout went away (:class:`StdoutGuard`)."""
    return getattr(console.file, "reader_gone", False)


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` with every value whole. In a pipe or file rich would squeeze it into 80
    columns and cut values with '…' (two swept values could then look alike), so it is printed at
    its natural width there; on a terminal a value too wide for its column folds onto a second line."""
    from rich.measure import Measurement

    for column in table.columns:
        column.overflow = "fold"
    if console.is_terminal:
        console.print(table)
        return
    width = console.width  # print(width=...) cannot widen past it
    console.width = max(width, Measurement.get(console, console.options.update_width(10**6), table).maximum)
    try:
        console.print(table)
    finally:
        console.width = width


def print_summary(
    console: Console, summary: dict[str, Any], seeds: Sequence[int], settings: Sequence[dict] | None = None
) -> None:
    """The final table: return per seed (or, for a sweep, per configuration with a 95% CI)."""
    from jaxrl_po.sweep import value_text

    title = f"{summary['algo'].upper()} on {summary['env']}"
    if settings is None:
        table = Table(title=f"{title}: final return (last 10% of updates)")
        table.add_column("seed", justify="right")
        table.add_column("final return", justify="right")
        for seed, ret in zip(seeds, summary["final_return_per_seed"]):
            table.add_row(str(seed), "n/a" if ret is None else f"{ret:.1f}")
        mean, std = summary["final_return_mean"], summary["final_return_std"]
        table.add_row("mean ± std", "n/a" if mean is None else f"{mean:.1f} ± {std:.1f}", style="bold")
        if len(seeds) > 1:
            table.add_row("mean ± 95% CI", mean_ci_text(mean, summary["final_return_ci95"]), style="bold")
    else:
        table = Table(title=f"{title}: configurations ranked by final return (mean ± 95% CI over seeds)")
        names = list(summary["sweep"])
        for name in names:
            table.add_column(name, justify="right")
        table.add_column("final return", justify="right")
        table.add_column("seeds", justify="right")
        for row in summary["ranking"]:
            value = mean_ci_text(row["final_return_mean"], row["ci95"])
            measured = row.get("num_measured", row["num_seeds"])  # (a summary written before it was recorded)
            seeds = str(row["num_seeds"]) if measured == row["num_seeds"] else f"{measured} of {row['num_seeds']}"
            table.add_row(*[value_text(row["hparams"][n]) for n in names], value, seeds)
    print_table(console, table)
    # train_s, sps and compile_s are this invocation's; after a resume so are its env steps.
    steps, total = summary["sessions"][-1]["env_steps"], summary["total_env_steps"]
    steps_text = f"{steps:,}" if steps == total else f"{steps:,} this session ({total:,} in all)"
    sps = "n/a" if summary["sps"] is None else f"{summary['sps']:,.0f}"
    console.print(
        f"env steps {steps_text} in {summary['train_s']:.1f} s "
        f"({sps} SPS), compile {summary['compile_s']:.1f} s, "
        f"total {summary['total_s']:.1f} s -> {summary['run_dir']}"
    )
