"""Sweeps of traced hyperparameters in one compiled call, sharding over devices, compile cache."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxrl_po import PPOConfig, make_train
from jaxrl_po.config import ConfigError
from jaxrl_po.logs import mean_ci_text
from jaxrl_po.sweep import confidence_interval, make_runs, parse_sweep, parse_sweep_spec, rank_configs, value_text

from conftest import cli_env, run_cli, run_cli_cases

TINY = PPOConfig(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=2,
                 total_timesteps=8 * 16 * 6, hidden_sizes=(16,))


def test_grid_times_seeds_compiles_once_and_matches_single_runs():
    traces = []
    base = make_train(TINY)

    def counted(*args):
        traces.append(1)  # runs at trace time only
        return base(*args)

    runs = make_runs(TINY, [0, 1], {"lr": [1e-3, 3e-3], "ent_coef": [0.0, 0.01]})
    assert len(runs.seeds) == 8 and runs.settings[0] == {"lr": 1e-3, "ent_coef": 0.0}
    out = jax.jit(jax.vmap(counted))(runs.keys, runs.hparams)
    assert len(traces) == 1
    for i in (0, 3, 5, 6):
        alone = jax.jit(make_train(TINY.replace(**runs.settings[i])))(jax.random.key(runs.seeds[i]))
        # Same episodes exactly; losses equal up to float rounding (batched vs single kernels).
        np.testing.assert_array_equal(out.metrics.episode_return[i], alone.metrics.episode_return)
        np.testing.assert_allclose(out.metrics.policy_loss[i], alone.metrics.policy_loss, atol=1e-5)
        np.testing.assert_allclose(out.metrics.value_loss[i], alone.metrics.value_loss, rtol=1e-5)


def test_sharded_runs_match_single_device_on_four_cpu_devices():
    script = textwrap.dedent("""
        import jax, numpy as np
        from jaxrl_po import PPOConfig, make_train
        from jaxrl_po.layout import Layout, choose_layout, make_mesh, put_runs, run_sharding
        from jaxrl_po.sweep import make_runs
        assert jax.device_count() == 4
        cfg = PPOConfig(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=2,
                        total_timesteps=8 * 16 * 6, hidden_sizes=(16,))
        runs = make_runs(cfg, [0, 1, 2], {"lr": [1e-3, 3e-3]})  # 6 runs, padded to 8
        train = jax.jit(jax.vmap(make_train(cfg)))
        layout = choose_layout(6, 4)
        assert layout == Layout(runs=4, envs=1)  # at least as many runs as devices: whole runs per device
        args = put_runs((runs.keys, runs.hparams), run_sharding(make_mesh(layout)), layout.padded_runs(6))
        assert args[0].shape == (8,) and len(args[0].sharding.device_set) == 4
        sharded = train(*args)
        single = train(runs.keys, runs.hparams)
        np.testing.assert_array_equal(np.asarray(sharded.metrics.episode_return)[:6],
                                      np.asarray(single.metrics.episode_return))
        for field in ("policy_loss", "value_loss", "entropy"):
            np.testing.assert_allclose(np.asarray(getattr(sharded.metrics, field))[:6],
                                       np.asarray(getattr(single.metrics, field)), rtol=1e-5, atol=1e-6)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=cli_env(cpu_devices=4), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


TINY_FLAGS = ["--num-envs", "8", "--num-steps", "16", "--num-minibatches", "2", "--update-epochs", "1",
              "--total-timesteps", "512", "--hidden-sizes", "16"]


def test_cli_sweep_writes_swept_columns_and_ranking(tmp_path):
    proc = run_cli([*TINY_FLAGS, "--num-seeds", "2", "--sweep", "lr=1e-3,3e-3", "--sweep", "ent-coef=0,0.01",
                    "--run-dir", str(tmp_path / "run"), "--no-compile-cache"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["seed", "hp_lr", "hp_ent_coef", "update"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["ranking"]) == 4 and all(r["num_seeds"] == 2 for r in summary["ranking"])
    means = [r["final_return_mean"] for r in summary["ranking"]]
    assert means == sorted(means, reverse=True)
    assert summary["final_return_ci95"] is None  # the 4 configurations share the seeds: the ranking has the CIs
    # In a pipe, rich used to break lines and the table's title at 80 columns and at the table's width.
    assert "PPO on CartPole-v1: configurations ranked by final return (mean ± 95% CI over seeds)\n" in proc.stdout
    header = next(line for line in proc.stdout.splitlines() if line.startswith("PPO on"))
    assert re.search(r" device\(s\) \(mesh: runs \d+ x envs 1\)$", header), header


BAD_SPECS = [
    ("warmup=1,2", "unknown hyperparameter 'warmup'"),
    ("kl_coef=0,0.1", "kl_coef is a hyperparameter of --algo grpo, not of --algo ppo; sweepable: clip_eps,"),
    ("num_envs=4,8", "num_envs changes shapes"),
    ("lr=", "needs at least one value"),
    ("lr=1e-3,,2e-3", "lr: an empty value between commas in '1e-3,,2e-3'"),
    ("lr=3e-4,fast", "values must be numbers, got 'fast' in '3e-4,fast'"),
    ("lr", "expected NAME=V1,V2"),
    ("clip_eps=0.1,2.0", "clip_eps"),
]


@pytest.fixture(scope="module")
def bad_spec_results(tmp_path_factory) -> dict[str, tuple[dict, object]]:
    """``{spec: (result, run dir)}`` of each bad ``--sweep`` spec through the CLI (one interpreter for all; see conftest)."""
    base = tmp_path_factory.mktemp("bad_sweep")
    run_dirs = {spec: base / str(i) for i, (spec, _) in enumerate(BAD_SPECS)}
    results = run_cli_cases({spec: {"argv": ["--sweep", spec, "--run-dir", str(run_dir)], "cwd": str(base)}
                             for spec, run_dir in run_dirs.items()})
    return {spec: (results[spec], run_dirs[spec]) for spec in run_dirs}


@pytest.mark.parametrize("spec, message", BAD_SPECS)
def test_bad_sweep_specs_fail_with_one_line(bad_spec_results, spec, message):
    res, run_dir = bad_spec_results[spec]
    assert res["rc"] == 2, res
    lines = res["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --sweep") and message in lines[0], res["stderr"]
    assert "Traceback" not in res["stderr"] and not run_dir.exists()


def test_every_grid_point_is_validated_not_only_each_value():
    from jaxrl_po.config import ConfigError, GRPOConfig
    from jaxrl_po.sweep import check_grid

    check_grid(GRPOConfig(), {"clip_eps": [0.1, 0.2], "clip_eps_high": [0.25]})
    with pytest.raises(ConfigError, match=r"^sweep: clip_eps=0.3, clip_eps_high=0.25: grpo.clip_eps_high: ") as err:
        check_grid(GRPOConfig(), {"clip_eps": [0.1, 0.3], "clip_eps_high": [0.25]})  # each value is valid alone
    assert "0.3" in str(err.value) and err.value.field == "sweep"


def test_another_algorithms_hyperparameter_is_named_as_such():
    from jaxrl_po.config import ConfigError, GRPOConfig
    from jaxrl_po.sweep import check_grid

    with pytest.raises(ConfigError, match=r"^sweep: gae_lambda is a hyperparameter of --algo ppo, not of --algo grpo; "
                                          r"sweepable: clip_eps, clip_eps_high, "):
        check_grid(GRPOConfig(), {"gae_lambda": [0.9, 0.95]})


def test_a_sweep_that_cannot_change_training_is_refused():
    """Its runs would be identical and still ranked as different settings."""
    from jaxrl_po.config import ConfigError, GRPOConfig, GRPOOptions
    from jaxrl_po.sweep import check_grid

    grpo = lambda **options: GRPOConfig(grpo=GRPOOptions(**options))
    with pytest.raises(ConfigError, match=r"^sweep: gamma has no effect here: only --grpo.advantage rtg discounts"):
        check_grid(grpo(), {"gamma": [0.9, 0.99]})
    check_grid(grpo(advantage="rtg"), {"gamma": [0.9, 0.99]})
    with pytest.raises(ConfigError, match="ref_mixup_alpha has no effect here: only the KL penalty"):
        check_grid(grpo(), {"ref_mixup_alpha": [0.5, 1.0]})  # kl_coef 0
    with pytest.raises(ConfigError, match="ref_mixup_alpha has no effect here: the reference policy is never"):
        check_grid(grpo(kl_coef=0.1, ref_sync_every=0), {"ref_mixup_alpha": [0.5, 1.0]})
    check_grid(grpo(kl_coef=0.1), {"ref_mixup_alpha": [0.5, 1.0]})
    check_grid(grpo(), {"ref_mixup_alpha": [0.5, 1.0], "kl_coef": [0.0, 0.1]})  # matters where kl_coef is 0.1
    check_grid(PPOConfig(), {"gamma": [0.9, 0.99]})


def test_compile_cache_is_populated_and_reused(tmp_path):
    cache = tmp_path / "cache"
    # With the progress line on: it is drawn between compiled segments, so the programs have no
    # host callbacks and JAX may cache them.
    flags = [*TINY_FLAGS, "--num-seeds", "1", "--compile-cache-dir", str(cache)]
    first = run_cli([*flags, "--run-dir", str(tmp_path / "a")], cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    entries = sorted(os.listdir(cache))
    for program in ("jit_init", "jit_run_segment"):
        assert any(name.startswith(program) for name in entries), entries
    second = run_cli([*flags, "--run-dir", str(tmp_path / "b")], cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    # A cache miss would have written a new entry; the compile times are recorded, not asserted.
    assert sorted(os.listdir(cache)) == entries
    for run in ("a", "b"):
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert summary["compile_cache"] == str(cache) and summary["compile_s"] > 0


def test_parse_and_rank_helpers():
    assert parse_sweep_spec("ent-coef=0, 0.01") == ("ent_coef", [0.0, 0.01])
    with pytest.raises(ConfigError):
        parse_sweep_spec("=1")
    with pytest.raises(ConfigError, match="lr is given twice"):
        parse_sweep(["lr=1e-3", "ent_coef=0", "lr=2e-3"])
    assert parse_sweep(["lr=1e-3,2e-3", "ent-coef=0"]) == {"lr": [1e-3, 2e-3], "ent_coef": [0.0]}
    # Swept values print short where that is exact, else in full: never two runs under one label.
    assert [value_text(v) for v in (0.001, 2.5e-4, 1e30, 3.0, 0.00123456789)] == [
        "0.001", "0.00025", "1e+30", "3", "0.00123456789"]
    rng = np.random.default_rng(0)
    assert all(float(value_text(v)) == v for v in rng.lognormal(-5, 3, 1000))
    mean, half = confidence_interval(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert np.isnan(confidence_interval(np.array([]))).all()  # no value: no mean, no interval
    assert confidence_interval([5.0])[0] == 5.0 and np.isnan(confidence_interval([5.0])[1])  # one seed: no interval
    assert confidence_interval([1.0, np.nan, 3.0]) == confidence_interval([1.0, 3.0])  # NaN seeds are left out
    table = rank_configs([{"lr": 1.0}, {"lr": 1.0}, {"lr": 2.0}, {"lr": 2.0}], np.array([1.0, 3.0, 5.0, 7.0]))
    assert [row["hparams"]["lr"] for row in table] == [2.0, 1.0] and table[0]["final_return_mean"] == 6.0
    # Seeds without a final return (stopped on non-finite values): a configuration with fewer measured seeds
    # ranks below, however high the mean of its survivors.
    finals = np.array([100, 101, 99, 100, 150, np.nan, np.nan, np.nan, 120, 130, np.nan, 125, np.nan] * 1, float)
    settings = [{"lr": 1e-3}] * 4 + [{"lr": 3e-3}] * 4 + [{"lr": 2e-3}] * 4 + [{"lr": 5e-3}]
    table = rank_configs(settings, finals)
    assert [(row["hparams"]["lr"], row["num_measured"], row["num_seeds"]) for row in table] == [
        (1e-3, 4, 4), (2e-3, 3, 4), (3e-3, 1, 4), (5e-3, 0, 1)]
    assert table[1]["final_return_mean"] == 125.0 and table[2]["final_return_mean"] == 150.0
    assert table[2]["ci95"] is None and table[3]["final_return_mean"] is None
    # Printed down to the CI's first significant digit (the mean's third without one), 1 to 4 decimals.
    assert [mean_ci_text(*pair) for pair in [(0.934, 0.0449), (-72.71, 3.52), (500.0, 0.0), (0.934, None),
                                              (1234.5, 220.1), (95.37, 0.054), (None, None)]] == [
        "0.93 ± 0.04", "-72.7 ± 3.5", "500.0 ± 0.0", "0.934", "1234.5 ± 220.1", "95.37 ± 0.05", "n/a"]
