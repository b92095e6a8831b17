"""Presets: each loads, validates, and trains briefly to finite metrics; flags override them."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import numpy as np
import pytest

from jaxrl_po import make_train, train
from jaxrl_po.config import ConfigError, GRPOConfig
from jaxrl_po.presets import PRESETS, get_preset
from jaxrl_po.train import UsageError, _optional_int, parse


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_validates_and_a_tiny_run_gives_finite_metrics(name):
    preset = get_preset(name)
    preset.config.validate()
    # Same algorithm, env and network; a budget of one or two updates with fewer envs.
    if isinstance(preset.config, GRPOConfig):
        tiny = preset.config.replace(num_envs=2 * preset.config.grpo.group_size, num_minibatches=2,
                                     total_timesteps=64, grpo=dataclasses.replace(preset.config.grpo, horizon=16))
    else:
        tiny = preset.config.replace(num_envs=8, num_steps=8, num_minibatches=2, total_timesteps=128)
    metrics = jax.tree_util.tree_map(np.asarray, jax.jit(make_train(tiny))(jax.random.key(0)).metrics)
    ran = metrics.env_steps > 0
    assert ran.any()
    for field in ("policy_loss", "entropy", "approx_kl", "grad_norm"):
        assert np.isfinite(getattr(metrics, field)[ran]).all(), field
    assert (metrics.nonfinite[ran] == 0).all()


def test_flags_override_a_preset_and_set_its_algorithm():
    options, config = parse(["--preset", "pendulum-grpo", "--lr", "3e-4"])
    assert options.algo == "grpo" and config.lr == 3e-4
    assert config.replace(lr=PRESETS["pendulum-grpo"].config.lr) == PRESETS["pendulum-grpo"].config


def test_bad_preset_names_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: cartpole-ppo"):
        get_preset("nope")
    with pytest.raises(ConfigError, match="is for grpo"):
        parse(["--preset", "cartpole-grpo", "--algo", "ppo"])


def test_config_file_sits_between_preset_and_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "preset: cartpole-grpo\n"
        "lr: 3e-4            # YAML reads this as a string; it is parsed like the flag's value\n"
        "hidden_sizes: [32, 32]\n"
        "anneal_lr: true\n"
        "normalize_obs: false\n"
        "grpo:\n"
        "  group_size: 4\n"
        "  shared_reset: false\n"
    )
    options, config = parse(["--config", str(path), "--hidden-sizes", "16"])
    assert options.algo == "grpo" and options.preset == "cartpole-grpo"
    assert config.lr == 3e-4 and config.hidden_sizes == (16,)  # the flag beats the file
    assert config.anneal_lr is True and config.normalize_obs is False
    assert config.grpo.group_size == 4 and config.grpo.shared_reset is False
    preset = PRESETS["cartpole-grpo"].config
    assert config.total_timesteps == preset.total_timesteps  # untouched fields come from the preset
    assert config.grpo.chunk_size == preset.grpo.chunk_size


def test_integer_settings_take_whole_numbers_written_as_floats(tmp_path):
    """Budgets are commonly written 5e5; YAML reads ``5e5`` as text and ``64.0`` as a float."""
    path = tmp_path / "budget.yaml"
    path.write_text("total_timesteps: 5e5\nnum_envs: 64.0\n")
    options, config = parse(["--config", str(path), "--num-steps", "1.28e2", "--hidden-sizes", "6.4e1", "32",
                             "--num-seeds", "2e0", "--grad-piece-size", "1_024"])
    assert (config.total_timesteps, config.num_envs, config.num_steps) == (500_000, 64, 128)
    assert config.hidden_sizes == (64, 32) and config.grad_piece_size == 1024 and options.num_seeds == 2
    assert all(type(x) is int for x in (config.total_timesteps, config.num_envs, *config.hidden_sizes))
    for bad in ("1.5", "2.5e-1", "abc", "1e400", "nan"):
        with pytest.raises(UsageError, match=f"^--num-envs: must be an integer \\(e.g. 100, 1_000 or 1e3\\), "
                                             f"got '{bad}'$"):
            parse(["--num-envs", bad])
    # Flags read before the others (they must act before JAX starts) take the same forms.
    assert _optional_int("cpu_devices", "2e0") == 2 and _optional_int("cpu_devices", None) is None
    with pytest.raises(ConfigError, match="must be an integer .* got '1.5'"):
        _optional_int("cpu_devices", "1.5")


def test_resume_keeps_swept_values_exactly_and_takes_the_same_sweep_again(tmp_path):
    from jaxrl_po.config import to_dict
    from jaxrl_po.sweep import parse_sweep

    grid = {"lr": [0.00123456789, 0.002]}  # more digits than %g keeps
    saved = {"algo": "ppo", "seeds": [0], "sweep": grid, **to_dict(PRESETS["cartpole-ppo"].config), "options": {}}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "checkpoints" / "100").mkdir(parents=True)  # parse only checks that a step exists
    assert parse_sweep(parse(["--resume", str(tmp_path)])[0].sweep) == grid
    again = parse(["--resume", str(tmp_path), "--sweep", "lr=0.00123456789,0.002"])[0]  # the same sweep, restated
    assert parse_sweep(again.sweep) == grid
    with pytest.raises(ConfigError, match="sweep: cannot change when resuming"):
        parse(["--resume", str(tmp_path), "--sweep", "lr=0.00123457,0.002"])


def test_null_sets_a_setting_that_can_be_unset(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("normalize_obs: true\n")
    assert parse(["--config", str(path)])[1].normalize_obs is True
    path.write_text("normalize_obs: null\ngrad_piece_size: null\n")  # None: the default per env / per platform
    _, config = parse(["--config", str(path), "--normalize-obs", "True"])
    assert config.normalize_obs is True and config.grad_piece_size is None
    assert parse(["--config", str(path)])[1].normalize_obs is None


def test_a_run_config_json_can_be_read_as_settings(tmp_path):
    from jaxrl_po.config import to_dict

    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"algo": "ppo", **to_dict(PRESETS["acrobot-ppo"].config)}))
    _, config = parse(["--config", str(path)])
    assert config == PRESETS["acrobot-ppo"].config


@pytest.mark.parametrize("text, flags, message", [
    ("num_env: 8\n", [], "unknown setting 'num_env'"),
    ("- lr\n", [], "must hold a mapping"),
    ("lr: [\n", [], "not valid YAML"),
    ("? [a, b]\n: 1\n", [], "not valid YAML: .*found unhashable key"),  # was a TypeError traceback
    # Nine nested aliases made a list of 9**8 widths, and the CLI hung expanding it.
    ("hidden_sizes: [&a [1, 1], &b [*a, *a]]\n", [], "not valid YAML: aliases \\(\\*a\\) are not supported"),
    pytest.param("lr: " + "[" * 5000 + "\n", [], "is nested too deeply to read", id="nested-5000-deep"),  # was a
    # RecursionError traceback from PyYAML's parser
    ("lr: 1e-3\nnum_envs: 8\nlr: 2e-3\n", [], "not valid YAML: 'lr' is given twice"),  # not the last one silently
    ("algo: grpo\ngrpo: {group_size: 4, group_size: 8}\n", [], "'group_size' is given twice"),
    ("algo: grpo\ngrpo: 3\n", [], "grpo must be a mapping"),
    ("algo: grpo\n", ["--algo", "ppo"], "says 'grpo', got --algo 'ppo'"),
    ("algo: grpo\n", ["--algo", ""], "says 'grpo', got --algo ''"),  # was "got --algo " (nothing to see)
    ("preset: [cartpole-ppo]\n", [], "preset must be a name, got \\['cartpole-ppo'\\]"),
    ("anneal_lr: 'yes'\n", [], "anneal_lr must be true or false, got 'yes'"),
    ("anneal_lr: yes\n", [], "anneal_lr must be true or false, got 'yes'"),  # YAML 1.1 would read true
    ("norm_adv: off\n", [], "norm_adv must be true or false, got 'off'"),
    # bool | None fields: tyro read the string "False" as False, where the bool fields above refuse it.
    ("normalize_obs: 'False'\n", [], "normalize_obs must be true, false or null \\(the default rule\\), got 'False'"),
    ("normalize_reward: 0\n", [], "normalize_reward must be true, false or null \\(the default rule\\), got 0"),
    ("lr: [1, 2]\n", [], "lr takes one value, got the list"),
    ("lr: null\n", [], "lr has no value \\(null\\); give one, or leave it out for the default"),
    ("algo: grpo\ngrpo: {oversampl: 2}\n", [], "unknown setting 'grpo.oversampl' for GRPOOptions; valid: grpo.group_size"),
    ("\x89PNG\x00\xff\n", [], "is not a text file"),
])
def test_bad_config_files_fail_with_the_field_named(tmp_path, text, flags, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode("latin-1"))  # the last case: bytes that are not UTF-8
    with pytest.raises(ConfigError, match=message) as err:
        parse(["--config", str(path), *flags])
    assert err.value.field in ("config", "algo")


@pytest.mark.parametrize("text, message, override", [
    ("lr: abc\n", "--lr: could not convert string to float: 'abc'", ["--lr", "1e-3"]),
    ("hidden_sizes: [64, '-x']\n", "Unrecognized options: -x", None),
    ("num_envs: 1.5\n", "--num-envs: must be an integer", ["--num-envs", "8"]),
])
def test_a_value_the_flag_parser_refuses_names_the_file(tmp_path, text, message, override):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=f"^{re.escape(str(path))}: .*{re.escape(message)}"):
        parse(["--config", str(path)])
    if override:  # a flag replaces the file's value, as with any other setting
        parse(["--config", str(path), *override])


def test_a_settings_file_is_a_base_that_a_sweep_may_replace(tmp_path):
    # Like a preset's: a run's config.json (every field) used as --config must still take any --sweep.
    path = tmp_path / "base.yaml"
    path.write_text("lr: 7e-4\nnormalize_obs: null\n")
    options, config = parse(["--config", str(path), "--sweep", "lr=1e-3,2e-3"])
    assert options.sweep == ("lr=1e-3,2e-3",) and config.lr == 7e-4 and config.normalize_obs is None


def test_a_bad_flag_beside_a_good_file_does_not_blame_the_file(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text("lr: 1e-3\n")
    with pytest.raises(UsageError, match="^--lr: could not convert string to float: 'abc'$"):
        parse(["--config", str(path), "--lr", "abc"])


def test_a_file_value_that_looks_like_a_flag_is_read_as_the_value(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("env: --num-envs\n")
    # tyro alone would say "Missing value for argument '--env'"
    with pytest.raises(ConfigError, match="unknown environment '--num-envs'; valid: CartPole-v1"):
        parse(["--config", str(path)])


@pytest.mark.parametrize("text, field, message", [
    ("lr: -1\n", "lr", "must be in (0, inf), got -1.0"),
    ("grpo:\n  group_size: 1\n", "grpo.group_size", "must be >= 2"),
])
def test_a_bad_value_from_the_file_names_the_file(tmp_path, text, field, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    algo = ["--algo", "grpo"] if field.startswith("grpo.") else []
    with pytest.raises(ConfigError) as err:
        parse(["--config", str(path), *algo])
    assert err.value.field == field and message in err.value.message
    assert err.value.message.endswith(f" (set in {path})")
    options, config = parse(["--config", str(path), *algo, f"--{field.replace('_', '-')}", "2"])  # a flag replaces it
    train.validate(options, config)


def test_a_bad_flag_beside_a_file_is_not_blamed_on_the_file(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text("lr: 1e-3\n")
    options, config = parse(["--config", str(path), "--clip-eps", "-1"])
    with pytest.raises(ConfigError) as err:
        train.validate(options, config)
    assert err.value.field == "clip_eps" and "set in" not in err.value.message


def test_resume_keeps_the_sinks_the_run_logged_to_unless_a_flag_turns_them_off(tmp_path, monkeypatch):
    from jaxrl_po import sinks
    from jaxrl_po.config import to_dict

    options = {"checkpoint_every": 5, "keep_checkpoints": 2, "tensorboard": True, "wandb": True,
               "wandb_project": "mine", "wandb_entity": None}
    saved = {"algo": "ppo", "seeds": [0], "sweep": {}, **to_dict(PRESETS["cartpole-ppo"].config), "options": options}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "checkpoints" / "100").mkdir(parents=True)  # parse only checks that a step exists
    resumed, config = parse(["--resume", str(tmp_path)])
    assert {name: getattr(resumed, name) for name in options} == options
    changed = parse(["--resume", str(tmp_path), "--no-tensorboard", "--no-wandb", "--keep-checkpoints", "4"])[0]
    assert (changed.tensorboard, changed.wandb, changed.keep_checkpoints, changed.checkpoint_every) == (False, False, 4, 5)
    (tmp_path / "config.json").write_text(json.dumps({**saved, "options": {}}))  # a run saved before these options
    assert not parse(["--resume", str(tmp_path)])[0].tensorboard

    # On a machine without tensorboardX, the refusal says the run's own option asked for it, and how to go on.
    def missing(module, flag, extra):
        raise ConfigError(flag, f"needs the {module} package")

    monkeypatch.setattr(sinks, "require", missing)
    with pytest.raises(ConfigError, match=r"^tensorboard: needs the tensorboardX package; the run logged there, so "
                                          r"--resume does too \(--no-tensorboard resumes without it\)$"):
        train.validate(resumed, config)


@pytest.mark.parametrize("change, message", [
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"seeds": 4}, "seeds must be a non-empty list"),
    ({"seeds": [2**40]}, "seeds: must be an integer from 0 to 2\\*\\*32 - 1, got 1099511627776"),
    ({"sweep": ["lr"]}, "sweep must map names"),
    ({"sweep": {"lr": ["a"]}}, "lr: each value must be a finite number \\(float32: \\|x\\| <= 3.4e\\+38\\), got 'a'"),
    ({"sweep": {"num_envs": [8]}}, "num_envs changes shapes"),
    ({"options": [1]}, "options must be a mapping"),
    ({"options": {"checkpoint_every": "x"}}, "options.checkpoint_every must be an integer"),
    ({"options": {"tensorboard": 1}}, "options.tensorboard must be true or false, got 1"),
    ({"options": {"wandb_entity": 3}}, "options.wandb_entity must be a string or null, got 3"),
    ({"num_envs": -3}, "config.json: num_envs: must be a positive integer, got -3"),  # not as --num-envs
])
def test_resume_refuses_a_damaged_config_json_with_one_error(tmp_path, change, message):
    from jaxrl_po.config import to_dict

    saved = {"algo": "ppo", "seeds": [0, 1], "sweep": {}, **to_dict(PRESETS["cartpole-ppo"].config),
             "options": {"checkpoint_every": 0, "keep_checkpoints": 3}}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "checkpoints" / "100").mkdir(parents=True)  # parse only checks that a step exists
    assert parse(["--resume", str(tmp_path)])[0].num_seeds == 2  # the undamaged file is accepted
    (tmp_path / "config.json").write_text(json.dumps({**saved, **change}))
    with pytest.raises(ConfigError, match=message) as err:
        parse(["--resume", str(tmp_path)])
    assert err.value.field == "resume"


def test_results_benchmark_runs_cut_presets_and_draws_the_table(tmp_path):
    """benchmarks/results.py end to end on a tiny budget: JSON per preset, both tables, one figure per env."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import cli_env

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "results.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--presets", "cartpole-ppo", "cartpole-grpo", "--num-seeds", "2",
         "--max-steps", "4.096e3", "--eval-episodes", "4", "--out-dir", str(tmp_path)],  # 4096, as a budget may be written
        env=cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, algo in (("cartpole-ppo", "ppo"), ("cartpole-grpo", "grpo")):
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["algo"] == algo and record["num_seeds"] == 2
        assert record["budget"] == 4096 and record["preset_budget"] == PRESETS[name].config.total_timesteps
        assert len(record["final_return_per_seed"]) == 2 and len(record["curves"]) == 2
        last = [max(c["env_steps"]) for c in record["curves"]]
        # PPO stops exactly at 2 updates of 32 x 64 steps; GRPO's last update may pass the alive-step budget.
        assert last == [4096, 4096] if algo == "ppo" else min(last) >= 4096
        # The final policies' evaluation: per seed, the mean of 4 whole CartPole episodes (8 to 500 each:
        # no CartPole episode from a reset ends in fewer than about 8 steps).
        final = record["final_policy"]
        assert final["episodes"] == 4
        for mode in ("stochastic", "greedy"):
            per_seed = np.asarray(final[mode]["per_seed"])
            assert per_seed.shape == (2,) and np.all((per_seed >= 8) & (per_seed <= 500)), (name, mode, per_seed)
            assert final[mode]["mean"] == pytest.approx(per_seed.mean())

    # The same preset trained by the CLI and taken with --from-run gives the same runs as results.py
    # training it (test_checkpoint checks the sittings that summary.json lists across a resume).
    saved = (tmp_path / "cartpole-ppo.json").read_text()
    trained = json.loads(saved)
    run_dir, from_run = tmp_path / "cli-run", tmp_path / "from-run"
    cli = subprocess.run([sys.executable, "-m", "jaxrl_po.train", "--preset", "cartpole-ppo", "--num-seeds", "2",
                          "--total-timesteps", "4096", "--run-dir", str(run_dir), "--no-progress",
                          "--no-compile-cache"], env=cli_env(), capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    take = [sys.executable, str(script), "--presets", "cartpole-ppo", "--from-run", str(run_dir),
            "--eval-episodes", "4", "--out-dir", str(tmp_path)]
    # A preset's record is never replaced without --overwrite, and the refusal comes before any work.
    refused = subprocess.run(take, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"--out-dir: {tmp_path} already holds cartpole-ppo.json (2 seeds, 4.1e3 steps)" in refused.stderr
    assert "Pass --overwrite to replace it" in refused.stderr
    assert (tmp_path / "cartpole-ppo.json").read_text() == saved
    taken = subprocess.run(take + ["--overwrite"], env=cli_env(), capture_output=True, text=True, timeout=600)
    assert taken.returncode == 0, taken.stderr[-3000:]
    record = json.loads((tmp_path / "cartpole-ppo.json").read_text())
    for key in ("final_return_per_seed", "curves", "config", "budget", "env_steps_used_per_seed"):
        assert record[key] == trained[key], key
    assert record["final_policy"]["greedy"] == trained["final_policy"]["greedy"]
    assert record["from_run"] == str(run_dir) and record["sessions"] == 1 and record["run_s"] > 0

    wrong = subprocess.run([sys.executable, str(script), "--presets", "cartpole-grpo", "--from-run", str(run_dir),
                            "--out-dir", str(from_run)], env=cli_env(), capture_output=True, text=True, timeout=600)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "--from-run" in wrong.stderr and "is not a run of preset cartpole-grpo" in wrong.stderr
    table = (tmp_path / "table.md").read_text()
    training_row, final_row = [line for line in table.splitlines() if line.startswith("| CartPole-v1")]
    assert training_row.count("cut from") == 2 and "500 (5e5)" in training_row
    assert "Final policies, 4 episodes per seed and mode" in table
    cells = [c.strip() for c in final_row.strip("|").split("|")]
    expected = [json.loads((tmp_path / f"cartpole-{algo}.json").read_text())["final_policy"][mode]["mean"]
                for algo in ("ppo", "grpo") for mode in ("stochastic", "greedy")]
    assert [float(c.split(" ± ")[0]) for c in cells[1:5]] == pytest.approx(expected, abs=0.051)
    assert (tmp_path / "CartPole-v1.png").stat().st_size > 0

    bad = subprocess.run([sys.executable, str(script), "--eval-episodes", "0", "--out-dir", str(tmp_path / "bad")],
                         env=cli_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--eval-episodes: must be an integer from 1 to 100,000, got 0" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
