"""Learning curves from run directories: ``python -m jaxrl_po.plot RUN_DIR [RUN_DIR ...]``.

Each line is the mean episode return across seeds against env steps, with a
95% Student-t confidence band across seeds (the interval of
:func:`jaxrl_po.sweep.mean_and_ci`). A plain run directory gives one
line; a sweep directory (``hp_*`` columns in ``metrics.csv``) gives one line
per swept configuration.

The loading half (:func:`load_curves`) is plain numpy so benchmarks and
notebooks can reuse it; :func:`draw_curves` / :func:`plot_curves` do the
drawing with the non-interactive Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxrl_po.config import whole_number_argument
from jaxrl_po.logs import read_json, replace_whole, without_mplbackend
from jaxrl_po.stop import exit_process, run_stoppable
from jaxrl_po.sweep import mean_and_ci, value_text

DEFAULT_POINTS = 200
Y_MARGIN = 0.05  # of the data's y-range, above and below it (matplotlib's own default margin)
REQUIRED_COLUMNS = ("seed", "update", "env_steps", "episode_return")
OPTIONAL_COLUMNS = ("nonfinite",)  # > 0 on the update that stopped a run (jaxrl_po.loop.describe_nonfinite)


class PlotError(Exception):
    """Bad input for plotting; the message is shown as one ``error: ...`` line."""


@dataclass
class Curve:
    """One line of the plot: P grid points, S seeds."""

    label: str
    env_steps: np.ndarray  # f[P] common env-step grid
    mean: np.ndarray  # f[P] mean return across seeds (NaN where no seed has a value yet)
    half_width: np.ndarray  # f[P] 95% CI half-width (NaN where fewer than 2 seeds have a value)
    num_seeds: int
    returns: np.ndarray  # f[S, P] each seed's return on the grid (NaN before its first episode)
    num_stopped: int = 0  # seeds stopped early on non-finite values (the mean is of the others after that)


# ---- numbers -------------------------------------------------------------------------------


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """NaN-aware rolling mean over the last ``window`` entries (the current one included).

    values: f[U]. Returns f[U]; NaN only where the whole window is NaN. Trailing (not
    centred) so a point never uses updates that come after it.
    """
    values = np.asarray(values, float)
    if window <= 1:
        return values.copy()
    finite = ~np.isnan(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    hi = np.arange(1, len(values) + 1)
    lo = np.maximum(hi - window, 0)
    count = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (sums[hi] - sums[lo]) / count, np.nan)


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Replace each NaN by the last finite value before it; leading NaNs stay NaN. f[U] -> f[U].

    An update where no episode finished says nothing new: the last return seen is the best
    estimate, and it keeps a NaN from blanking out both of its neighbours' interpolation.
    """
    values = np.asarray(values, float)
    # Index of the latest finite entry at or before each position; leading NaNs point at
    # entry 0, itself NaN, so they stay NaN.
    index = np.where(~np.isnan(values), np.arange(len(values)), 0)
    np.maximum.accumulate(index, out=index)
    return values[index]


def common_grid(
    steps: Sequence[np.ndarray], returns: Sequence[np.ndarray], points: int = DEFAULT_POINTS,
    stopped: Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Put each seed's curve on one env-step grid. Returns (grid f[P], returns f[S, P]).

    steps[i], returns[i]: f[U_i] cumulative env steps and (forward-filled) return of seed i.
    stopped[i]: seed i stopped early on non-finite values; it does not bound the grid and
    is NaN after its last step. When every other seed logged the same env steps (PPO)
    they are the grid and nothing is interpolated. Otherwise (GRPO counts alive steps,
    which differ per seed) the grid is ``points`` evenly spaced steps from 0 to the
    smallest final step count of those seeds, so each of them covers all of it, and each
    seed is linearly interpolated; before a seed's first logged step its value is NaN
    (no extrapolation).
    """
    steps = [np.asarray(s, float) for s in steps]
    returns = [np.asarray(r, float) for r in returns]
    stopped = [False] * len(steps) if stopped is None else list(stopped)
    bounding = [s for s, early in zip(steps, stopped) if not early] or steps
    first = bounding[0]
    if all(np.array_equal(s, first) for s in bounding) and all(np.array_equal(s, first[: len(s)]) for s in steps):
        return first.copy(), np.stack([np.pad(r, (0, len(first) - len(r)), constant_values=np.nan) for r in returns])
    grid = np.linspace(0.0, min(s[-1] for s in bounding), points)
    return grid, np.stack([np.interp(grid, s, r, left=np.nan, right=np.nan) for s, r in zip(steps, returns)])


# ---- loading -------------------------------------------------------------------------------


def _read_metrics(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """``metrics.csv`` -> (hp column names in file order, column name -> f[rows])."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as err:
        raise PlotError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise PlotError(f"{path}: not a text (CSV) file") from None
    except csv.Error as err:  # e.g. a field over the csv module's limit (128 KiB)
        raise PlotError(f"{path}: not a metrics file ({err})") from None
    if not rows:
        raise PlotError(f"{path}: empty file")
    header, data = rows[0], [r for r in rows[1:] if r]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise PlotError(f"{path}: missing column(s) {', '.join(missing)}")
    if not data:
        raise PlotError(f"{path}: no data rows")
    hp_names = [c for c in header if c.startswith("hp_")]
    wanted = [*REQUIRED_COLUMNS, *hp_names, *[c for c in OPTIONAL_COLUMNS if c in header]]
    index = {name: header.index(name) for name in wanted}
    columns = {name: np.empty(len(data)) for name in wanted}
    for line, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise PlotError(f"{path}: line {line} has {len(row)} fields, expected {len(header)}")
        for name in wanted:
            try:
                columns[name][line - 2] = float(row[index[name]])
            except ValueError:
                raise PlotError(f"{path}: line {line}: {name} is not a number: {row[index[name]]!r}") from None
    return hp_names, columns


def _read_config_label(run_dir: Path) -> tuple[str, str | None]:
    """(``"PPO CartPole-v1"``, env) from ``config.json``; the directory name if there is none."""
    path = run_dir / "config.json"
    if not path.exists():
        return run_dir.name, None
    try:
        config = read_json(path)
        algo, env = str(config["algo"]), str(config["env"])
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise PlotError(f"{path}: needs JSON with keys algo and env ({type(err).__name__}: {err})") from None
    return f"{algo.upper()} {env}", env


def _format_setting(names: Sequence[str], values: Sequence[float]) -> str:
    return ", ".join(f"{name[3:]}={value_text(value)}" for name, value in zip(names, values))


def load_curves(
    run_dir: str | Path, label: str | None = None, smooth: int = 1, points: int = DEFAULT_POINTS
) -> list[Curve]:
    """The curves of one run directory: one, or one per swept configuration, in file order.

    label: line label (default ``"<ALGO> <env>"`` from config.json); for a sweep each
    configuration's label is ``"<label> lr=0.001, ent_coef=0"``. smooth: trailing rolling
    mean over this many updates, per seed, before the seeds are aligned. points: grid size
    when seeds' env steps differ. Raises :class:`PlotError` for unusable input.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():  # e.g. a settings file or metrics.csv itself given in place of its directory
        raise PlotError(f"{run_dir}: not a run directory (it is a file); give the directory that holds metrics.csv")
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: no such directory")
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise PlotError(f"{run_dir}: no metrics.csv")
    if smooth < 1:
        raise PlotError(f"--smooth: must be at least 1, got {smooth}")
    hp_names, columns = _read_metrics(path)
    if not np.isfinite(columns["episode_return"]).any():
        raise PlotError(f"{path}: no finite episode_return (no episode finished in any update)")
    default_label, _ = _read_config_label(run_dir)
    label = default_label if label is None else label

    # A run is one (hp values, seed); configurations keep their order of first appearance.
    configs: dict[tuple, dict[float, list[int]]] = {}
    hp = np.stack([columns[n] for n in hp_names], axis=1) if hp_names else np.zeros((len(columns["seed"]), 0))
    for row, (setting, seed) in enumerate(zip(map(tuple, hp), columns["seed"])):
        configs.setdefault(setting, {}).setdefault(seed, []).append(row)

    curves = []
    for setting, runs in configs.items():
        steps, returns, stopped = [], [], []
        for rows in runs.values():
            rows = np.asarray(rows)
            rows = rows[np.argsort(columns["update"][rows], kind="stable")]
            steps.append(columns["env_steps"][rows])
            returns.append(forward_fill(trailing_mean(columns["episode_return"][rows], smooth)))
            stopped.append("nonfinite" in columns and columns["nonfinite"][rows[-1]] > 0)
        grid, on_grid = common_grid(steps, returns, points, stopped)
        mean, half = mean_and_ci(on_grid)
        name = f"{label} {_format_setting(hp_names, setting)}" if hp_names else label
        curves.append(Curve(name, grid, mean, half, len(runs), on_grid, sum(stopped)))
    return curves


# ---- drawing -------------------------------------------------------------------------------


def data_ylim(curves: Sequence[Curve], margin: float = Y_MARGIN) -> tuple[float, float] | None:
    """(low, high) y-limits that cover every curve's mean f[P] and per-seed returns f[S, P],
    widened by ``margin`` of their range on each side; None when there is no finite value
    or they are all equal (matplotlib's own limits then suffice).

    The confidence bands are left out on purpose: with 2 seeds the Student-t half-width is
    12.7 / sqrt(2) = 9x the seeds' standard deviation, far wider than the data, and would
    squash every line into a sliver of the axis. A band wider than the data is clipped.
    """
    values = np.concatenate([np.empty(0)] + [np.ravel(a) for c in curves for a in (c.mean, c.returns)])
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return None
    low, high = float(values.min()), float(values.max())
    pad = margin * (high - low)
    return low - pad, high + pad


def draw_curves(curves: Sequence[Curve], title: str | None = None):
    """A matplotlib Figure with one line per curve (``ax.get_lines()`` has them in order)
    and its 95% CI band where at least two seeds have a value; the y-limits are
    :func:`data_ylim`'s, so a band wider than the data is clipped by the axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas on this figure only: no pyplot state, no global backend
    ax = fig.add_subplot()
    for curve in curves:
        seeds = f"{curve.num_seeds} seed" + ("s" if curve.num_seeds != 1 else "")
        seeds += f", {curve.num_stopped} stopped" if curve.num_stopped else ""
        alone = np.isfinite(curve.mean).sum() < 2  # a line needs two points; one is drawn as a marker
        (line,) = ax.plot(curve.env_steps, curve.mean, label=f"{curve.label} ({seeds})", linewidth=1.5,
                          marker="o" if alone else None)
        band = np.isfinite(curve.half_width)
        if band.any():
            ax.fill_between(
                curve.env_steps, curve.mean - curve.half_width, curve.mean + curve.half_width,
                where=band, color=line.get_color(), alpha=0.2, linewidth=0,
            )
    limits = data_ylim(curves)
    if limits is not None:  # the data sets the y-range, not the band (see data_ylim)
        ax.set_ylim(limits)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(title="mean, 95% CI over seeds", fontsize="small", title_fontsize="small")
    return fig


FORMATS = (".png", ".svg", ".pdf")
UNDATED = {".svg": {"Date": None}, ".pdf": {"CreationDate": None}}  # no timestamp: the same curves give the same file


def output_paths(out: str | Path) -> list[Path]:
    """The files ``out`` names: its suffix picks the format, no suffix means PNG and SVG.

    ``x.png`` -> [x.png]; ``x`` -> [x.png, x.svg]. Raises ValueError for another suffix.
    """
    out = Path(out)
    if not out.suffix:
        return [out.with_name(out.name + ".png"), out.with_name(out.name + ".svg")]
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"must end in {', '.join(FORMATS)} (one file) or have no suffix (PNG and SVG), got {str(out)!r}")
    return [out]


def plot_curves(curves: Sequence[Curve], out: str | Path, title: str | None = None) -> list[Path]:
    """Draw ``curves`` and write them to :func:`output_paths` of ``out`` (whose directory must exist); returns the paths."""
    import matplotlib

    paths = output_paths(out)
    fig = draw_curves(curves, title)
    with matplotlib.rc_context({"svg.hashsalt": "jaxrl_po"}):  # SVG ids from a fixed salt, not a random one
        for path in paths:  # whole or not at all: a failure or a stop leaves the file as it was
            replace_whole(path, lambda tmp: fig.savefig(tmp, dpi=150, metadata=UNDATED.get(path.suffix.lower())))
    return paths


def check_out_path(out: str | Path, overwrite: bool) -> list[Path]:
    """:func:`output_paths` of ``--out``, or PlotError: a bad suffix, a directory, no directory to
    write in, or (unless ``overwrite``) files that exist: a file the user named is theirs."""
    if not str(out):  # Path("") is "."
        raise PlotError("--out: must name a file, got ''")
    try:
        paths = output_paths(out)
    except ValueError as err:
        raise PlotError(f"--out: {err}") from None
    if Path(out).is_dir():
        raise PlotError(f"--out: {out} is a directory; name a file in it, e.g. {Path(out) / 'curves.png'}")
    if not paths[0].parent.is_dir():
        raise PlotError(f"--out: cannot write {out}: no directory {paths[0].parent}")
    taken = [str(path) for path in paths if path.exists()]
    if taken and not overwrite:
        raise PlotError(f"--out: {' and '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; "
                        f"pass --overwrite to replace {'it' if len(taken) == 1 else 'them'}, or name another file")
    return paths


# ---- command line --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise PlotError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m jaxrl_po.plot",
        description="Learning curves (episode return vs env steps, mean and 95% CI over seeds) "
        "of run directories; a sweep directory gives one line per configuration.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (with metrics.csv)")
    parser.add_argument("--out", help="output file: .png, .svg or .pdf, or no suffix for both PNG and SVG, in a "
                        "directory that exists (default: RUN_DIR/curves.png and .svg of the first RUN_DIR, which each "
                        "call replaces)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out's file(s) if they exist (without it an existing file is refused)")
    parser.add_argument("--title", help="plot title (default: the environment names)")
    parser.add_argument("--smooth", type=whole_number_argument, default=1, metavar="K",
                        help="rolling mean over K updates per seed (default 1: none)")
    parser.add_argument("--labels", nargs="+", metavar="LABEL", help="one label per RUN_DIR (default: ALGO env)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with without_mplbackend():  # figures are drawn with Agg directly
            return run_stoppable(lambda: plot_cli(argv))  # Ctrl-C, SIGTERM: one line, exit code 128 + signal
    except PlotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def plot_cli(argv: list[str]) -> int:
    """Parse, plot, and print the files written."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    for path in plot_runs(args):
        print(path)
    return 0


def check_drawable(flag: str, text: str | None) -> None:
    """PlotError naming ``flag`` where matplotlib cannot draw ``text``: ``$...$`` is mathtext, whose
    errors came out as a traceback from inside ``savefig``."""
    from matplotlib import cbook
    from matplotlib.mathtext import MathTextParser

    if text is None or not cbook.is_math_text(text):
        return
    try:
        MathTextParser("path").parse(text)
    except ValueError as err:
        reason = str(err).strip().splitlines()[-1].split("Exception: ", 1)[-1]
        raise PlotError(f"{flag}: matplotlib cannot draw '{text}' ($...$ is math): {reason}; "
                        "write \\$ for a dollar sign") from None


def plot_runs(args: argparse.Namespace) -> list[Path]:
    """The CLI's work: check ``--out``, read every run's curves, draw them; returns the files written."""
    if args.labels is not None and len(args.labels) != len(args.run_dirs):
        raise PlotError(f"--labels: got {len(args.labels)} label(s) for {len(args.run_dirs)} run dir(s)")
    for flag, texts in (("--title", [args.title]), ("--labels", args.labels or [])):
        for text in texts:
            check_drawable(flag, text)
    if args.out is not None:  # before any work
        check_out_path(args.out, args.overwrite)
    if "" in args.run_dirs:  # Path("") is ".": it would be read as the current directory
        raise PlotError("RUN_DIR: must name a directory, got ''")
    curves, envs = [], []
    for i, run_dir in enumerate(args.run_dirs):
        curves += load_curves(run_dir, args.labels[i] if args.labels else None, smooth=args.smooth)
        env = _read_config_label(Path(run_dir))[1]
        if env and env not in envs:
            envs.append(env)
    out = args.out or Path(args.run_dirs[0]) / "curves"
    title = args.title if args.title is not None else ", ".join(envs) or None
    try:
        return plot_curves(curves, out, title)
    except OSError as err:
        flag = "--out: " if args.out is not None else ""
        raise PlotError(f"{flag}cannot write {out}: {err.strerror or err}") from None
    except ImportError as err:  # matplotlib is not a core dependency of the package
        raise PlotError(f"plotting needs matplotlib ({err}); pip install matplotlib") from None


if __name__ == "__main__":
    exit_process(main())
