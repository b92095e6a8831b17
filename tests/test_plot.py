"""Learning-curve plots from run directories (synthetic metrics.csv files; nothing is trained)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_handler
from jaxrl_po import plot
from jaxrl_po.plot import common_grid, draw_curves, forward_fill, load_curves, main, trailing_mean

NAN = float("nan")
T975 = {2: 4.302652729911275, 1: 12.706204736174698}  # Student-t 97.5% quantiles by degrees of freedom


def write_run(run_dir, rows, hp_names=(), algo="ppo", env="CartPole-v1"):
    """rows: (seed, *hp values, update, env_steps, episode_return), as train.py writes them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    header = ["seed", *[f"hp_{n}" for n in hp_names], "update", "env_steps", "episode_return",
              "episode_length", "episodes", "policy_loss"]
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join(str(v) for v in (*row, 12, 1, -0.01)))
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run_dir / "config.json").write_text(json.dumps({"algo": algo, "env": env, "lr": 3e-4}))
    return run_dir


def ppo_rows(returns_per_seed, steps_per_update=100, hp=()):
    return [
        (seed, *hp, u + 1, (u + 1) * steps_per_update, ret)
        for seed, returns in enumerate(returns_per_seed)
        for u, ret in enumerate(returns)
    ]


def test_mean_and_ci_match_hand_computed_numbers(tmp_path):
    run = write_run(tmp_path / "ppo", ppo_rows([
        [NAN, 10.0, NAN],  # seed 0: nothing finished in update 1; update 3 carries 10 forward
        [4.0, 20.0, 20.0],
        [6.0, 30.0, 40.0],
    ]))
    (curve,) = load_curves(run)
    assert curve.label == "PPO CartPole-v1" and curve.num_seeds == 3
    # Seeds share their env steps (PPO): those are the grid, nothing interpolated.
    np.testing.assert_array_equal(curve.env_steps, [100, 200, 300])
    np.testing.assert_array_equal(curve.returns[0, 1:], [10.0, 10.0])
    # Update 1: seed 0 has no value yet -> two seeds, 4 and 6: mean 5, std sqrt(2), t(1).
    # Update 2: 10, 20, 30 -> mean 20, std 10, t(2). Update 3: 10, 20, 40 -> mean 70/3.
    std3 = np.sqrt(((10 - 70 / 3) ** 2 + (20 - 70 / 3) ** 2 + (40 - 70 / 3) ** 2) / 2)
    np.testing.assert_allclose(curve.mean, [5.0, 20.0, 70 / 3])
    np.testing.assert_allclose(
        curve.half_width,
        [T975[1] * np.sqrt(2) / np.sqrt(2), T975[2] * 10 / np.sqrt(3), T975[2] * std3 / np.sqrt(3)],
    )


def test_one_seed_has_no_band(tmp_path):
    run = write_run(tmp_path / "one", ppo_rows([[1.0, 2.0, 3.0]]))
    (curve,) = load_curves(run)
    np.testing.assert_array_equal(curve.mean, [1.0, 2.0, 3.0])
    assert np.isnan(curve.half_width).all()
    ax = draw_curves([curve]).axes[0]
    assert len(ax.get_lines()) == 1 and len(ax.collections) == 0


def test_grpo_seeds_are_interpolated_onto_a_common_grid(tmp_path):
    run = write_run(tmp_path / "grpo", [
        (0, 1, 10, 1.0), (0, 2, 20, 2.0), (0, 3, 30, 3.0), (0, 4, 40, 4.0),
        (1, 1, 15, 10.0), (1, 2, 30, NAN), (1, 3, 45, 40.0),  # NaN: carry 10 forward
    ], algo="grpo")
    (curve,) = load_curves(run, points=5)
    assert curve.label == "GRPO CartPole-v1"
    # From 0 to the smallest final env steps (40), so every seed covers the grid.
    np.testing.assert_array_equal(curve.env_steps, [0, 10, 20, 30, 40])
    # Seed 1 at 40 steps: between (30, 10) and (45, 40) -> 10 + 10/15 * 30 = 30.
    np.testing.assert_allclose(curve.returns[1], [NAN, NAN, 10.0, 10.0, 30.0])
    np.testing.assert_allclose(curve.returns[0], [NAN, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(curve.mean, [NAN, 1.0, 6.0, 6.5, 17.0])
    assert np.isnan(curve.half_width[:2]).all()  # fewer than two seeds there
    assert curve.half_width[4] == pytest.approx(T975[1] * np.std([4.0, 30.0], ddof=1) / np.sqrt(2))
    (default,) = load_curves(run)
    assert default.env_steps.shape == (200,) and default.env_steps[-1] == 40


def test_a_seed_stopped_on_nonfinite_values_does_not_cut_the_line(tmp_path):
    """Seed 1 stopped at update 2 (its last row has a nonfinite code): seed 0's later updates stay."""
    rows = [(0, u, 100 * u, float(u), 0) for u in (1, 2, 3, 4)] + [(1, 1, 100, 10.0, 0), (1, 2, 200, NAN, 4)]
    run = tmp_path / "stopped"
    write_run(run, [])
    lines = ["seed,update,env_steps,episode_return,nonfinite"] + [",".join(map(str, row)) for row in rows]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    (curve,) = load_curves(run)
    np.testing.assert_array_equal(curve.env_steps, [100, 200, 300, 400])  # PPO steps: still no interpolation
    np.testing.assert_array_equal(curve.returns[1], [10.0, 10.0, NAN, NAN])  # nothing after it stopped
    np.testing.assert_allclose(curve.mean, [5.5, 6.0, 3.0, 4.0])
    # The mean is of the seed that went on after the other stopped: the legend says so.
    assert curve.num_stopped == 1
    assert [line.get_label() for line in draw_curves([curve]).axes[0].get_lines()] == ["PPO CartPole-v1 (2 seeds, 1 stopped)"]
    # The same with GRPO's uneven steps: the grid ends at the longest-running seed that did not stop.
    grid, on_grid = common_grid([np.array([10.0, 20, 30, 40]), np.array([15.0]), np.array([12.0, 35])],
                                [np.ones(4), np.ones(1), np.ones(2)], points=5, stopped=[False, True, False])
    np.testing.assert_allclose(grid, [0, 8.75, 17.5, 26.25, 35])
    np.testing.assert_array_equal(on_grid[1], [NAN, NAN, NAN, NAN, NAN])  # 15 is not on the grid: no value, no guess


def test_a_curve_of_one_point_is_drawn_as_a_marker(tmp_path):
    (curve,) = load_curves(write_run(tmp_path / "short", ppo_rows([[5.0], [7.0]])))
    (line,) = draw_curves([curve]).axes[0].get_lines()
    assert line.get_marker() == "o" and list(line.get_ydata()) == [6.0]
    (long,) = load_curves(write_run(tmp_path / "long", ppo_rows([[5.0, 6.0]])))
    assert draw_curves([long]).axes[0].get_lines()[0].get_marker() in ("None", "", None)


def test_y_range_covers_the_data_not_a_wider_band(tmp_path):
    """Two seeds: the t(1) band is about 9x their standard deviation (here +-381 around returns of 10-90), so
    the y-limits come from the means and the seeds' values, with a 5% margin, and the band is clipped."""
    (curve,) = load_curves(write_run(tmp_path / "two", ppo_rows([[10.0, 20.0, 30.0], [30.0, 60.0, 90.0]])))
    assert np.nanmax(curve.half_width) > 300
    ax = draw_curves([curve]).axes[0]
    assert ax.get_ylim() == pytest.approx((10.0 - 4.0, 90.0 + 4.0))
    assert len(ax.collections) == 1  # the band is still drawn, past the axes
    # Several curves: the limits span them all; a flat line keeps matplotlib's own limits.
    (high,) = load_curves(write_run(tmp_path / "high", ppo_rows([[200.0, 500.0]])))
    assert draw_curves([curve, high]).axes[0].get_ylim() == pytest.approx((10.0 - 24.5, 500.0 + 24.5))
    (flat,) = load_curves(write_run(tmp_path / "flat", ppo_rows([[7.0, 7.0], [7.0, 7.0]])))
    low, top = draw_curves([flat]).axes[0].get_ylim()
    assert low < 7.0 < top


def test_sweep_gives_one_line_per_configuration(tmp_path):
    rows = (
        ppo_rows([[1.0, 2.0], [3.0, 4.0]], hp=(0.001, 0.0))
        + ppo_rows([[10.0, 20.0], [30.0, 40.0]], hp=(0.003, 0.01))
    )
    run = write_run(tmp_path / "sweep", rows, hp_names=("lr", "ent_coef"))
    curves = load_curves(run)
    assert [c.label for c in curves] == ["PPO CartPole-v1 lr=0.001, ent_coef=0", "PPO CartPole-v1 lr=0.003, ent_coef=0.01"]
    assert [c.num_seeds for c in curves] == [2, 2]
    np.testing.assert_allclose(curves[0].mean, [2.0, 3.0])
    np.testing.assert_allclose(curves[1].mean, [20.0, 30.0])
    assert [c.label for c in load_curves(run, label="A")] == ["A lr=0.001, ent_coef=0", "A lr=0.003, ent_coef=0.01"]


def test_smoothing_and_forward_fill():
    np.testing.assert_allclose(trailing_mean(np.array([1.0, NAN, 3.0, 5.0]), 2), [1.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(trailing_mean(np.array([NAN, 2.0]), 3), [NAN, 2.0])
    np.testing.assert_allclose(forward_fill(np.array([NAN, 1.0, NAN, NAN, 2.0])), [NAN, 1.0, 1.0, 1.0, 2.0])
    grid, rows = common_grid([np.array([1.0, 2.0])] * 2, [np.array([1.0, 2.0]), np.array([3.0, 4.0])])
    np.testing.assert_array_equal(grid, [1.0, 2.0])
    assert rows.shape == (2, 2)


def test_main_writes_png_and_svg_with_one_line_per_curve(tmp_path, monkeypatch, capsys):
    single = write_run(tmp_path / "ppo", ppo_rows([[1.0, 2.0, 3.0], [2.0, 3.0, 5.0]]))
    sweep = write_run(tmp_path / "sweep", ppo_rows([[1.0, 2.0]], hp=(0.001,)) + ppo_rows([[3.0, 4.0]], hp=(0.01,)),
                      hp_names=("lr",))
    figures = []
    real_draw = plot.draw_curves

    def spy(curves, title=None):
        figures.append(real_draw(curves, title))
        return figures[-1]

    monkeypatch.setattr(plot, "draw_curves", spy)
    (tmp_path / "figs").mkdir()
    out = tmp_path / "figs" / "curves"  # no suffix: PNG and SVG
    assert main([str(single), str(sweep), "--out", str(out), "--smooth", "2e0", "--title", "T"]) == 0
    png, svg = out.with_suffix(".png"), out.with_suffix(".svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert "<svg" in svg.read_text()
    assert capsys.readouterr().out.split() == [str(png), str(svg)]
    ax = figures[-1].axes[0]
    assert ax.get_title() == "T"
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["PPO CartPole-v1 (2 seeds)", "PPO CartPole-v1 lr=0.001 (1 seed)", "PPO CartPole-v1 lr=0.01 (1 seed)"]
    assert len(ax.collections) == 1  # only the two-seed line has a band

    # A named --out that exists is refused before any work, and kept; --overwrite replaces it.
    svg.write_text("the user's edited figure")
    assert main([str(single), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: --out: {png} and {svg} already exist; pass --overwrite to replace "
                                       "them, or name another file\n")
    assert svg.read_text() == "the user's edited figure" and len(figures) == 1
    png.unlink()
    assert main([str(single), "--out", str(out)]) == 2
    assert f"error: --out: {svg} already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main([str(single), "--out", str(out), "--overwrite"]) == 0
    assert "<svg" in svg.read_text() and png.stat().st_size > 1000

    # A suffix picks one format; the same curves give the same bytes (no timestamp, no random SVG ids).
    capsys.readouterr()
    for suffix in (".svg", ".pdf", ".PNG"):
        one = tmp_path / "figs" / f"one{suffix}"
        assert main([str(single), "--out", str(one)]) == 0
        assert capsys.readouterr().out.split() == [str(one)]
        first = one.read_bytes()
        assert main([str(single), "--out", str(one), "--overwrite"]) == 0
        assert one.read_bytes() == first, suffix
        capsys.readouterr()
    assert sorted(path.name for path in (tmp_path / "figs").iterdir()) == [
        "curves.png", "curves.svg", "one.PNG", "one.pdf", "one.svg"]

    # Defaults: next to the first run dir; --labels renames each run dir's lines.
    assert main([str(single), "--labels", "mine"]) == 0
    assert (single / "curves.png").stat().st_size > 0 and (single / "curves.svg").stat().st_size > 0
    assert [line.get_label() for line in figures[-1].axes[0].get_lines()] == ["mine (2 seeds)"]
    assert figures[-1].axes[0].get_title() == "CartPole-v1"
    assert main([str(single)]) == 0  # the default curves.png is derived from the run: each call replaces it


def test_bad_input_is_one_error_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "unfinished", ppo_rows([[NAN, NAN]]))
    good = write_run(tmp_path / "good", ppo_rows([[1.0]]))
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "metrics.csv").write_bytes(b"\x89PNG\x00\xff")
    (tmp_path / "my.yaml").write_text("lr: 0.001\n")  # a settings file given in place of a run directory
    deep = write_run(tmp_path / "deep", ppo_rows([[1.0]]))
    (deep / "config.json").write_text("[" * 200_000)  # Python's JSON parser raised RecursionError: a traceback
    (tmp_path / "huge-field").mkdir()
    (tmp_path / "huge-field" / "metrics.csv").write_text("x" * 200_000 + "\n")  # csv.Error was a traceback
    cases = {
        "huge-field": ([str(tmp_path / "huge-field")], "not a metrics file (field larger than field limit"),
        "deep-config": ([str(deep)], "config.json: needs JSON with keys algo and env (ValueError: nested too deeply"),
        "not-text": ([str(tmp_path / "binary")], "not a text (CSV) file"),
        "missing": ([str(tmp_path / "nope")], "no such directory"),
        "a-file": ([str(tmp_path / "my.yaml")], f"{tmp_path / 'my.yaml'}: not a run directory (it is a file)"),
        "metrics-file": ([str(good / "metrics.csv")], "not a run directory (it is a file); give the directory that "
                                                      "holds metrics.csv"),
        "no-csv": ([str(tmp_path / "empty")], "no metrics.csv"),
        "no-returns": ([str(tmp_path / "unfinished")], "no finite episode_return"),
        "labels": ([str(good), "--labels", "a", "b"], "--labels"),
        "smooth": ([str(good), "--smooth", "0"], "--smooth: must be at least 1"),
        # $...$ is matplotlib's mathtext: a bad one was a traceback from inside savefig.
        "title-math": ([str(good), "--title", "$\\foo$"], "--title: matplotlib cannot draw '$\\foo$'"),
        "labels-math": ([str(good), "--labels", "$\\frac{$"], "--labels: matplotlib cannot draw"),
        "flag": ([str(good), "--bogus"], "--bogus"),
        "no-dirs": ([], "RUN_DIR"),
        "out-empty": ([str(good), "--out", ""], "--out: must name a file, got ''"),  # was PosixPath('.')'s repr
        "out-unwritable": ([str(good), "--out", "/proc/x.png"], "--out: cannot write /proc/x.png"),  # named no flag
        "run-dir-empty": ([""], "RUN_DIR: must name a directory, got ''"),  # was ".: no metrics.csv"
        "out-format": ([str(good), "--out", str(tmp_path / "x.jpg")],
                       "--out: must end in .png, .svg, .pdf (one file) or have no suffix (PNG and SVG), got"),
        "out-dir": ([str(good), "--out", str(tmp_path / "empty")], f"--out: {tmp_path / 'empty'} is a directory"),
        "out-parent": ([str(good), "--out", str(tmp_path / "nope" / "x.png")], f"no directory {tmp_path / 'nope'}"),
    }
    for name, (argv, expected) in cases.items():
        assert main(argv) == 2, name
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (name, captured.err)
        assert captured.out == ""
    assert not (tmp_path / "nope").exists() and not list(tmp_path.glob("x.*"))  # a refused --out writes nothing
    assert main(["--help"]) == 0
    assert "RUN_DIR" in capsys.readouterr().out


def test_python_dash_m(tmp_path):
    """The module entry point (one process: importing the package costs a few seconds of CPU). A backend
    name matplotlib does not know (the CLI draws with Agg and needs none) stopped its import: a traceback."""
    run = write_run(tmp_path / "run", ppo_rows([[1.0, 2.0], [2.0, 4.0]]))
    ok = subprocess.run([sys.executable, "-m", "jaxrl_po.plot", str(run)], capture_output=True, text=True, timeout=120,
                        env={**os.environ, "MPLBACKEND": "bogus"})
    assert ok.returncode == 0, ok.stderr
    assert (run / "curves.png").exists() and (run / "curves.svg").exists()


def test_main_leaves_the_callers_mplbackend_as_it_was(tmp_path, monkeypatch):
    """The CLI draws with Agg and drops MPLBACKEND while it runs; called from Python (a notebook's kernel
    sets it), it puts it back."""
    run = write_run(tmp_path / "run", ppo_rows([[1.0, 2.0], [2.0, 4.0]]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    assert main([str(run)]) == 0
    assert os.environ["MPLBACKEND"] == "module://matplotlib_inline.backend_inline"


def test_ctrl_c_while_writing_is_one_line_and_keeps_the_file_it_would_replace(tmp_path, monkeypatch, capsys):
    """A Ctrl-C while a figure is written: exit code 130, one line, and the ``--overwrite`` target keeps its bytes."""
    import signal

    from matplotlib.figure import Figure

    run = write_run(tmp_path / "ppo", ppo_rows([[1.0, 2.0, 3.0]]))
    out = tmp_path / "curves.png"
    out.write_bytes(b"the user's figure")
    real_savefig = Figure.savefig

    def savefig_cut_by_ctrl_c(self, fname, *args, **kwargs):
        real_savefig(self, fname, *args, **kwargs)
        run_handler(signal.SIGINT)  # the Ctrl-C lands before the file is in place

    monkeypatch.setattr(Figure, "savefig", savefig_cut_by_ctrl_c)
    try:
        code = main([str(run), "--out", str(out), "--overwrite"])
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C came out of plot.main as a traceback")
    assert code == 130 and capsys.readouterr().err.strip() == "interrupted (Ctrl-C)"
    assert out.read_bytes() == b"the user's figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "ppo"]  # no temp file left behind
