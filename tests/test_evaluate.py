"""Evaluation of trained runs: ``python -m jaxrl_po.evaluate`` and its Python API.

Three run directories are trained once per module through the real CLI: the
default PPO CartPole config (2 seeds, learns to 500), a tiny PPO run on
Breakout-MinAtar (an env gymnax draws with matplotlib only) and a tiny GRPO run
on DeepSea-bsuite (an env gymnax cannot draw; every episode lasts exactly 8
steps). Episode returns are checked against a plain Python loop over gymnax.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from conftest import cli_env, run_handler
from jaxrl_po import evaluate
from jaxrl_po.config import ConfigError
from jaxrl_po.envs import RunningMeanStd, make_vec_env
from jaxrl_po.evaluate import episode_keys, play_episodes
from jaxrl_po.networks import make_policy

TIMEOUT_S = 300
EVAL_KEYS = {"algo", "env", "checkpoint_step", "episodes", "seed", "max_episode_steps", "obs_normalized",
             "sweep", "runs", "configs"}
RUN_KEYS = {"run", "seed", "settings", "update", "stopped_nonfinite", "greedy", "stochastic"}
MODE_KEYS = {"returns", "lengths", "mean", "std", "mean_length"}


def train(run_dir: Path, args: list[str], fast_compile: bool = True, num_seeds: int = 2) -> Path:
    """``python -m jaxrl_po.train`` into ``run_dir``; fails the test with its output if it fails."""
    env = cli_env() if fast_compile else {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxrl_po.train", *args, "--num-seeds", str(num_seeds), "--no-progress",
         "--no-compile-cache", "--run-dir", str(run_dir)],
        env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )
    assert proc.returncode == 0, f"training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return run_dir


def run_evaluate(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxrl_po.evaluate", *args], cwd=cwd, env={**cli_env(), **env},
                          capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> Path:
    # The README's first command: the defaults, 4 seeds (with unoptimised XLA it would run several
    # times slower; see conftest).
    return train(tmp_path_factory.mktemp("eval") / "cartpole", ["--algo", "ppo"], fast_compile=False, num_seeds=4)


@pytest.fixture(scope="module")
def cartpole_eval(cartpole_run) -> tuple[subprocess.CompletedProcess, dict]:
    proc = run_evaluate([str(cartpole_run), "--episodes", "10"], cwd=cartpole_run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((cartpole_run / "eval.json").read_text())


@pytest.fixture(scope="module")
def breakout_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("eval") / "breakout",
                 ["--env", "Breakout-MinAtar", "--num-envs", "8", "--num-steps", "8", "--num-minibatches", "2",
                  "--total-timesteps", "128", "--hidden-sizes", "16", "16"])


@pytest.fixture(scope="module")
def deepsea_grpo_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("eval") / "deepsea",
                 ["--algo", "grpo", "--env", "DeepSea-bsuite", "--num-envs", "16", "--grpo.group-size", "8",
                  "--num-minibatches", "2", "--total-timesteps", "600", "--hidden-sizes", "16", "16"])


# ---- an independent reference: one episode at a time, one gymnax step at a time ---------


class Reference:
    """Episodes played one at a time, one gymnax step at a time, in Python (independent of evaluate).

    Follows evaluate's documented key use: reset with split(key)[0]; at every step
    split the rest into (rest, action key, env key).
    """

    def __init__(self, env_name: str, policy):
        self.env, self.env_params = gymnax.make(env_name)
        self.space = self.env.action_space(self.env_params)
        self.step = jax.jit(self.env.step)
        self.reset = jax.jit(self.env.reset)
        self.mode = jax.jit(lambda params, x: policy.dist(params, x).mode())
        self.sample = jax.jit(lambda params, x, key: policy.dist(params, x).sample(seed=key))

    def episode(self, params, obs_stats, key: jax.Array, greedy: bool) -> tuple[float, int]:
        """(raw return, length) of one episode."""
        reset_key, rest = jax.random.split(key)
        obs, state = self.reset(reset_key, self.env_params)
        total, length = 0.0, 0
        for _ in range(int(self.env_params.max_steps_in_episode)):
            rest, act_key, env_key = jax.random.split(rest, 3)
            x = jnp.asarray(obs, jnp.float32).reshape(-1)
            if obs_stats is not None:
                x = jnp.clip((x - obs_stats.mean) / jnp.sqrt(obs_stats.var + 1e-8), -10.0, 10.0)
            action = self.mode(params, x) if greedy else self.sample(params, x, act_key)
            if hasattr(self.space, "low"):  # continuous: the env sees the clipped action
                action = jnp.clip(action, self.space.low, self.space.high)
            obs, state, reward, terminated, truncated, _ = self.step(env_key, state, action, self.env_params)
            total += float(reward)
            length += 1
            if bool(terminated) or bool(truncated):
                break
        return total, length


def fresh_policies(env_name: str, num_runs: int, normalize: bool):
    """(policy, params [R], obs_stats [R] or None): untrained policies, each run with its own statistics."""
    vec = make_vec_env(env_name, 1)
    spec = vec.action_spec
    policy = make_policy(spec, (16,), "tanh")
    params = jax.jit(jax.vmap(lambda k: policy.init(k, vec.obs_dim)))(jax.random.split(jax.random.key(7), num_runs))
    stats = None
    if normalize:
        d = vec.obs_dim
        stats = RunningMeanStd(
            mean=jnp.stack([jnp.linspace(-0.5, 0.5, d), jnp.linspace(0.3, -0.3, d)])[:num_runs],
            var=jnp.stack([jnp.linspace(0.2, 3.0, d), jnp.linspace(4.0, 0.5, d)])[:num_runs],
            count=jnp.full((num_runs,), 100.0),
        )
    return policy, params, stats


@pytest.mark.parametrize("env_name, normalize", [("CartPole-v1", False), ("Pendulum-v1", True)])
def test_episode_returns_match_a_plain_python_loop(env_name, normalize):
    episodes, num_runs = 2, 2
    policy, params, stats = fresh_policies(env_name, num_runs, normalize)
    env = make_vec_env(env_name, 2 * episodes)
    keys = jnp.concatenate([episode_keys(5, episodes)] * 2)
    greedy = jnp.arange(2 * episodes) < episodes
    returns, lengths = jax.jit(jax.vmap(lambda p, s: play_episodes(env, policy, p, s, keys, greedy)))(params, stats)
    assert returns.shape == lengths.shape == (num_runs, 2 * episodes)
    reference = Reference(env_name, policy)
    for run in range(num_runs):
        run_params = jax.tree_util.tree_map(lambda x: x[run], params)
        run_stats = None if stats is None else jax.tree_util.tree_map(lambda x: x[run], stats)
        for i in range(2 * episodes):
            expected = reference.episode(run_params, run_stats, keys[i], bool(greedy[i]))
            assert int(lengths[run, i]) == expected[1], (run, i)
            np.testing.assert_allclose(float(returns[run, i]), expected[0], rtol=1e-4, err_msg=f"run {run}, ep {i}")
    if env_name == "Pendulum-v1":
        assert (lengths == 200).all()  # Pendulum only truncates
        assert returns[0, 0] != returns[1, 0]  # each run acts with its own params and statistics
    else:
        assert len(set(np.asarray(lengths).ravel().tolist())) > 1  # varied episode lengths, not all capped


def test_episode_i_does_not_depend_on_the_number_of_episodes():
    many, few = episode_keys(3, 5), episode_keys(3, 2)
    np.testing.assert_array_equal(jax.random.key_data(many[:2]), jax.random.key_data(few))
    assert not np.array_equal(jax.random.key_data(episode_keys(4, 2)), jax.random.key_data(few))


# ---- a trained CartPole run (the default config) -----------------------------------------


@pytest.mark.learning
def test_cli_defaults_solve_cartpole_on_every_seed(cartpole_run):
    # 1024 envs x 16 steps, 2 epochs x 16 minibatches, 2e6 steps, seeds 0..3 spread over the cores
    # as the CLI spreads them. (With 1e6 steps one seed showed 266: each env had then run only
    # ~1000 steps, so the few episodes that ended in the last 10% of updates were the failures.)
    summary = json.loads((cartpole_run / "summary.json").read_text())
    assert summary["num_seeds"] == 4 and summary["num_updates"] == 122, summary  # 2e6 // (1024 * 16)
    assert all(f >= 475 for f in summary["final_return_per_seed"]), summary["final_return_per_seed"]


@pytest.mark.learning
def test_trained_cartpole_is_greedy_above_475_and_writes_eval_json(cartpole_run, cartpole_eval):
    proc, result = cartpole_eval
    assert set(result) == EVAL_KEYS
    assert (result["algo"], result["env"], result["episodes"], result["seed"]) == ("ppo", "CartPole-v1", 10, 0)
    assert result["checkpoint_step"] == 122 and result["obs_normalized"] is False  # 2e6 // (1024 * 16)
    assert [run["seed"] for run in result["runs"]] == [0, 1, 2, 3]
    for run in result["runs"]:
        assert set(run) == RUN_KEYS and run["settings"] == {}
        assert run["update"] == 122 and run["stopped_nonfinite"] is None
        for mode in ("greedy", "stochastic"):
            assert set(run[mode]) == MODE_KEYS
            assert len(run[mode]["returns"]) == len(run[mode]["lengths"]) == 10
            # CartPole pays 1 per step: the return is the length.
            assert run[mode]["returns"] == [float(n) for n in run[mode]["lengths"]]
            assert max(run[mode]["lengths"]) <= 500
            np.testing.assert_allclose(run[mode]["mean"], np.mean(run[mode]["returns"]))
            np.testing.assert_allclose(run[mode]["std"], np.std(run[mode]["returns"]))
        assert run["greedy"]["mean"] >= 475, run
    (config,) = result["configs"]  # no sweep: one configuration of the 4 seeds
    assert config["settings"] == {} and config["runs"] == [0, 1, 2, 3]
    for mode in ("greedy", "stochastic"):
        means = [run[mode]["mean"] for run in result["runs"]]
        np.testing.assert_allclose(config[mode]["mean"], np.mean(means))
        assert config[mode]["n"] == 4 and config[mode]["ci95"] >= 0
    assert "greedy" in proc.stdout and "stochastic" in proc.stdout and "eval.json" in proc.stdout
    assert not [p.name for p in cartpole_run.iterdir() if ".tmp" in p.name]  # no temporary file left behind


@pytest.mark.learning
def test_trained_cartpole_episode_matches_a_plain_python_loop(cartpole_run, cartpole_eval):
    _, result = cartpole_eval
    policies = evaluate.trained_policies(evaluate.load_run(cartpole_run))
    key = episode_keys(0, 1)[0]
    reference = Reference("CartPole-v1", policies.policy)
    for r, run in enumerate(result["runs"]):
        params = jax.tree_util.tree_map(lambda x: x[r], policies.params)
        for mode in ("greedy", "stochastic"):
            ret, length = reference.episode(params, None, key, mode == "greedy")
            assert (run[mode]["returns"][0], run[mode]["lengths"][0]) == (ret, length), (r, mode)


def test_which_envs_can_be_drawn():
    no_pygame = lambda name: name != "pygame"
    evaluate.check_renderable("Breakout-MinAtar", available=no_pygame)  # matplotlib + seaborn only
    with pytest.raises(ConfigError, match=r'needs pygame, .*pip install "gymnasium\[classic-control\]"$'):
        evaluate.check_renderable("Pendulum-v1", available=no_pygame)
    with pytest.raises(ConfigError, match="needs seaborn, .*pip install seaborn$"):
        evaluate.check_renderable("Catch-bsuite", available=lambda name: name != "seaborn")
    with pytest.raises(ConfigError, match="gymnax cannot draw DiscountingChain-bsuite"):
        evaluate.check_renderable("DiscountingChain-bsuite")  # its env.name is "DiscountingChain-v0"


@pytest.mark.learning  # (uses the trained CartPole run)
def test_classic_control_render_without_pygame_is_one_line_error(cartpole_run, capsys, monkeypatch):
    # gymnasium draws classic control with pygame, which this venv lacked when this was written.
    if evaluate._module_available("pygame"):
        monkeypatch.setattr(evaluate, "_module_available", lambda name: name != "pygame")
    code = evaluate.main([str(cartpole_run), "--render", str(cartpole_run / "cartpole.gif")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err == 'error: --render: drawing CartPole-v1 needs pygame, which is not installed; ' \
                  'pip install "gymnasium[classic-control]"\n'
    assert not (cartpole_run / "cartpole.gif").exists()


# ---- rendering --------------------------------------------------------------------------


def test_render_writes_a_gif_of_greedy_episode_zero(breakout_run, tmp_path):
    out = tmp_path / "breakout.gif"
    out.write_bytes(b"an older GIF")  # --overwrite replaces it; without the flag it is refused (bad inputs below)
    proc = run_evaluate([str(breakout_run), "--episodes", "2", "--render", str(out), "--render-run", "1",
                         "--overwrite"], cwd=tmp_path,
                         MPLBACKEND="bogus",  # a backend matplotlib lacks: was a traceback
                         JAX_DEBUG_NANS="1")  # refused by train (its metrics hold NaN by design), not here
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((breakout_run / "eval.json").read_text())
    frames = result["runs"][1]["greedy"]["lengths"][0]
    assert f"({frames} frames)" in proc.stdout
    assert out.stat().st_size > 0
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["breakout.gif"]  # no temp file left


def test_render_episode_api(breakout_run, tmp_path):
    path = evaluate.render_episode(breakout_run, tmp_path / "b.gif", run=0, seed=3)
    assert path == tmp_path / "b.gif"
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames >= 1


# ---- GRPO and an env gymnax cannot draw -------------------------------------------------


def test_grpo_run_evaluates_with_hand_checkable_lengths(deepsea_grpo_run):
    result = evaluate.evaluate_run(deepsea_grpo_run, episodes=3, seed=1, write=True)
    assert set(result) == EVAL_KEYS and result["algo"] == "grpo" and result["seed"] == 1
    assert json.loads((deepsea_grpo_run / "eval.json").read_text()) == result
    assert len(result["runs"]) == len(json.loads((deepsea_grpo_run / "config.json").read_text())["seeds"])
    for run in result["runs"]:
        for mode in ("greedy", "stochastic"):
            # DeepSea (size 8) always ends after 8 steps; the return is 1 for the treasure
            # minus 0.01/8 per step to the right, so it lies in [-0.01, 1].
            assert run[mode]["lengths"] == [8, 8, 8]
            assert all(-0.01 - 1e-6 <= x <= 1.0 + 1e-6 for x in run[mode]["returns"])
    # Each call replaces eval.json; the same episodes and seed give it back exactly (README).
    other = evaluate.evaluate_run(deepsea_grpo_run, episodes=3, seed=2, write=True)
    assert json.loads((deepsea_grpo_run / "eval.json").read_text()) == other != result
    assert evaluate.evaluate_run(deepsea_grpo_run, episodes=3, seed=1, write=True) == result


def main_hit_by_ctrl_c(monkeypatch, capfd, jitted: str, argv: list[str]) -> None:
    """``evaluate.main(argv)`` with a Ctrl-C as XLA's work begins: while ``evaluate.<jitted>`` is traced inside
    its jit. The first Ctrl-C waits for XLA (see jaxrl_po.stop), then stops: exit code 130, one line on stderr."""
    import signal

    real, traced = getattr(evaluate, jitted), []

    def hit_by_ctrl_c(*args, **kwargs):
        run_handler(signal.SIGINT)  # raises here unless evaluate waits for XLA
        traced.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, jitted, hit_by_ctrl_c)
    try:
        code = evaluate.main(argv)
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C came out of evaluate.main as a traceback")
    captured = capfd.readouterr()
    assert code == 130 and traced == [True] and captured.err.strip() == "interrupted (Ctrl-C)"
    assert "Ctrl-C: stopping once XLA is done" in captured.out


def test_ctrl_c_while_evaluating_lets_xla_finish_then_stops_without_writing(deepsea_grpo_run, monkeypatch, capfd):
    (deepsea_grpo_run / "eval.json").unlink(missing_ok=True)
    main_hit_by_ctrl_c(monkeypatch, capfd, "play_episodes", [str(deepsea_grpo_run), "--episodes", "2"])
    assert not (deepsea_grpo_run / "eval.json").exists()


def test_ctrl_c_while_rendering_lets_xla_finish_then_stops_without_a_gif(breakout_run, tmp_path, monkeypatch, capfd):
    """The episode drawn for ``--render`` is XLA's work too; the GIF it would have replaced keeps its bytes."""
    out = tmp_path / "breakout.gif"
    out.write_bytes(b"the user's gif")
    main_hit_by_ctrl_c(monkeypatch, capfd, "record_episode",
                       [str(breakout_run), "--episodes", "2", "--render", str(out), "--overwrite"])
    assert out.read_bytes() == b"the user's gif" and sorted(p.name for p in tmp_path.iterdir()) == ["breakout.gif"]


def test_unrenderable_env_is_one_line_error(deepsea_grpo_run, tmp_path, capsys):
    code = evaluate.main([str(deepsea_grpo_run), "--render", str(tmp_path / "x.gif")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --render: gymnax cannot draw DeepSea-bsuite; drawable: ")
    assert not (tmp_path / "x.gif").exists()
    with pytest.raises(ConfigError, match="cannot draw"):
        evaluate.render_episode(deepsea_grpo_run, tmp_path / "x.gif")


# ---- bad input --------------------------------------------------------------------------


def test_bad_inputs_are_one_line_errors(deepsea_grpo_run, breakout_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    shutil.copy(deepsea_grpo_run / "config.json", no_checkpoint / "config.json")
    damaged = tmp_path / "damaged"  # a run whose config.json was edited into an invalid config
    shutil.copytree(deepsea_grpo_run, damaged)
    saved = json.loads((damaged / "config.json").read_text())
    (damaged / "config.json").write_text(json.dumps({**saved, "num_envs": -3}))
    run = str(deepsea_grpo_run)
    mine = tmp_path / "mine.gif"
    mine.write_bytes(b"a GIF the user made")
    cases = {
        "missing dir": ([str(tmp_path / "nope")], "error: RUN_DIR: "),
        "empty dir": ([str(empty)], "error: RUN_DIR: "),
        "no checkpoint": ([str(no_checkpoint)], "error: RUN_DIR: no checkpoint in "),
        "damaged config": ([str(damaged)], f"error: {damaged} is not a run directory "
                                           f"({damaged / 'config.json'}: num_envs: must be a positive integer"),
        "episodes 0": ([run, "--episodes", "0"], "error: --episodes: must be an integer from 1"),
        "episodes abc": ([run, "--episodes", "abc"], "error: --episodes: must be an integer (e.g. 100, 1_000 or 1e3), got 'abc'"),
        "negative seed": ([run, "--seed", "-1"], "error: --seed: "),
        "not a gif": ([run, "--render", str(tmp_path / "x.png")], "error: --render: the output must be a .gif"),
        "empty gif": ([run, "--render", ""], "error: --render: the output must be a .gif file, got ''"),  # was '.'
        "existing gif": ([str(breakout_run), "--render", str(mine)],
                         f"error: --render: {mine} already exists; pass --overwrite to replace it, or name another file"),
        "no such run": ([str(breakout_run), "--render", str(tmp_path / "x.gif"), "--render-run", "2"],
                        "error: --render-run: must be a run index from 0 to 1 (this directory has 2 run(s)), got 2"),
        "unknown flag": ([run, "--frobnicate"], "error: unrecognized arguments"),
        "empty run dir": ([""], "error: RUN_DIR: must name a run directory, got ''"),  # not the current directory
        # Drawing options without --render used to be ignored (exit 0), --render-run unchecked.
        "render run alone": ([run, "--render-run", "5"], "error: --render-run: only applies with --render OUT.gif"),
        "render seed alone": ([run, "--render-seed", "3"], "error: --render-seed: only applies with --render"),
        "overwrite alone": ([run, "--overwrite"], "error: --overwrite: only applies with --render"),
        "no run dir": ([], "error: the following arguments are required: RUN_DIR"),
    }
    for name, (argv, start) in cases.items():
        code = evaluate.main(argv)
        captured = capsys.readouterr()
        assert code == 2, (name, captured)
        assert captured.err.startswith(start) and captured.err.count("\n") == 1, (name, captured.err)
        assert "Traceback" not in captured.err + captured.out, name
    assert not (no_checkpoint / "checkpoints").exists()  # evaluating changed nothing there
    assert not list(tmp_path.glob("x.*"))
    assert mine.read_bytes() == b"a GIF the user made"


def test_bad_input_through_python_m(tmp_path):
    proc = run_evaluate([str(tmp_path / "nope"), "--episodes", "3"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"error: RUN_DIR: {tmp_path / 'nope'} is not a directory\n"


def test_where_eval_json_or_the_gif_cannot_be_written_fails_before_restoring(deepsea_grpo_run, breakout_run,
                                                                            tmp_path, monkeypatch, capsys):
    """A read-only run directory (someone else's runs), or a --render directory, was found only at the end,
    after the whole evaluation; an eval.json that is a directory too. ``os.access`` is what refuses (as
    train's --resume check; the suite may run as root, whom permissions do not stop)."""
    from jaxrl_po import runner

    read_only = {deepsea_grpo_run, tmp_path / "ro"}
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: not (Path(path) in read_only and mode & os.W_OK)
                        and real_access(path, mode))
    monkeypatch.setattr(runner, "load_trained", lambda *a, **k: pytest.fail("restored before the check"))
    (tmp_path / "ro").mkdir()
    taken = tmp_path / "taken"
    shutil.copytree(breakout_run, taken, ignore=shutil.ignore_patterns("eval.json"))
    (taken / "eval.json").mkdir()
    cases = [
        ([str(deepsea_grpo_run), "--episodes", "2"],
         f"error: RUN_DIR: cannot write in {deepsea_grpo_run} (no permission, or a read-only file system)\n"),
        ([str(breakout_run), "--render", str(tmp_path / "ro" / "x.gif")],
         f"error: --render: cannot write in {tmp_path / 'ro'} (no permission, or a read-only file system)\n"),
        ([str(taken)], f"error: RUN_DIR: cannot write {taken / 'eval.json'}: it is a directory\n"),
    ]
    for argv, message in cases:
        assert evaluate.main(argv) == 2 and capsys.readouterr().err == message, argv
    with pytest.raises(ConfigError, match="cannot write in"):
        evaluate.evaluate_run(deepsea_grpo_run, episodes=2, write=True)


def test_a_jax_platform_this_machine_lacks_is_one_line(tmp_path):
    """evaluate imported gymnax as it loaded, whose first array started the backend: a traceback."""
    proc = subprocess.run([sys.executable, "-m", "jaxrl_po.evaluate", str(tmp_path)], cwd=tmp_path,
                          env={**cli_env(), "JAX_PLATFORMS": "bogus"}, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: JAX cannot start its backend here (JAX_PLATFORMS=bogus: leave it unset"), line


def test_table_shows_swept_values():
    mode = {"returns": [1.0, 3.0], "lengths": [1, 3], "mean": 2.0, "std": 1.0, "mean_length": 2.0}
    result = {"algo": "ppo", "env": "CartPole-v1", "checkpoint_step": 7, "episodes": 2, "seed": 0, "sweep": ["lr"],
              "runs": [{"run": i, "seed": i % 2, "settings": {"lr": lr}, "update": 7, "stopped_nonfinite": None,
                        "greedy": mode, "stochastic": mode} for i, lr in enumerate([1e-3, 1e-3, 3e-4, 3e-4])]}
    result["configs"] = evaluate.config_summaries(result["runs"])
    console = Console(file=io.StringIO(), width=200)
    console.print(evaluate.results_table(result))
    text = console.file.getvalue()
    assert "lr" in text and "0.0003" in text and "0.001" in text and "2.00 ± 1.00" in text
    all_rows = [line for line in text.splitlines() if "all" in line and "│" in line]
    # One per swept value (they used to be one row pooling both): each value's two runs, whose means are equal.
    assert len(all_rows) == 2 and "0.001" in all_rows[0] and "0.0003" in all_rows[1], all_rows
    assert all(row.count("2.00 ± 0.00") == 2 for row in all_rows), all_rows
    assert "95% CI" in " ".join(text.split())
    assert "*" not in text and "non-finite" not in text


def test_config_summaries_match_hand_computed_intervals():
    """Per configuration: the mean of the runs' means and its 95% Student-t half-width,
    t(0.975, n-1) * sd(ddof=1) / sqrt(n); one run has no interval; a stopped run is left out."""
    def run(i, lr, greedy, stochastic, stopped=None):
        mode = lambda mean: {"returns": [mean], "lengths": [1], "mean": mean, "std": 0.0, "mean_length": 1.0}
        return {"run": i, "seed": i, "settings": {"lr": lr}, "update": 7, "stopped_nonfinite": stopped,
                "greedy": mode(greedy), "stochastic": mode(stochastic)}

    runs = [run(0, 1e-3, 1.0, 10.0), run(1, 1e-3, 2.0, 10.0), run(2, 1e-3, 3.0, 10.0), run(3, 1e-3, 4.0, 10.0),
            run(4, 3e-4, 7.0, 5.0), run(5, 3e-4, -50.0, -50.0, stopped="loss"), run(6, 1e-4, None, None)]
    first, second, third = evaluate.config_summaries(runs)
    # 1, 2, 3, 4: mean 2.5, sd 1.2909944, t(0.975, 3) = 3.1824463 -> 3.1824463 * 1.2909944 / 2 = 2.0542603
    assert first["settings"] == {"lr": 1e-3} and first["runs"] == [0, 1, 2, 3]
    assert first["greedy"]["mean"] == 2.5 and first["greedy"]["n"] == 4
    np.testing.assert_allclose(first["greedy"]["ci95"], 2.0542603, rtol=1e-7)
    assert first["stochastic"] == {"mean": 10.0, "ci95": 0.0, "n": 4}
    assert second["runs"] == [4] and second["greedy"] == {"mean": 7.0, "ci95": None, "n": 1}  # run 5 stopped
    assert third["greedy"] == {"mean": None, "ci95": None, "n": 0}  # its one run has no finite mean


def test_table_keeps_every_value_whole_in_an_80_column_pipe():
    """rich squeezes a table into 80 columns when output is not a terminal, cutting values with '…':
    two swept values could then read alike. print_table prints it at its natural width there."""
    from jaxrl_po.logs import print_table

    names = ["lr", "max_grad_norm", "ent_coef", "gamma", "vf_coef"]
    mode = {"returns": [95.0, 123.0], "lengths": [95, 123], "mean": 109.0, "std": 14.0, "mean_length": 109.0}
    runs = [{"run": i, "seed": 0, "settings": {"lr": lr, "max_grad_norm": 0.5, "ent_coef": 0.01, "gamma": 0.99,
                                               "vf_coef": 0.5},
             "update": 7, "stopped_nonfinite": None, "greedy": mode, "stochastic": mode}
            for i, lr in enumerate([0.00123456789, 0.00123457])]
    result = {"algo": "ppo", "env": "CartPole-v1", "checkpoint_step": 7, "episodes": 2, "seed": 0, "sweep": names,
              "runs": runs, "configs": evaluate.config_summaries(runs)}
    console = Console(file=io.StringIO(), width=80)
    assert not console.is_terminal
    print_table(console, evaluate.results_table(result))
    text = console.file.getvalue()
    assert "…" not in text
    for whole in ("0.00123456789", "0.00123457", "max_grad_norm", "109.00 ± 14.00"):
        assert whole in text, whole
    console.print("x " * 60)  # the console's own width is back: later lines wrap at 80 again
    assert max(len(line) for line in console.file.getvalue().splitlines()[-2:]) <= 80


def test_table_marks_a_stopped_run_and_leaves_it_out_of_all():
    """A run stopped by non-finite values is scored with its last good parameters: marked, not averaged."""
    scored = lambda mean: {"returns": [mean], "lengths": [1], "mean": mean, "std": 0.0, "mean_length": 1.0}
    runs = [{"run": 0, "seed": 0, "settings": {}, "update": 7, "stopped_nonfinite": None,
             "greedy": scored(100.0), "stochastic": scored(90.0)},
            {"run": 1, "seed": 1, "settings": {}, "update": 3, "stopped_nonfinite": "loss",
             "greedy": scored(10.0), "stochastic": scored(9.0)}]
    result = {"algo": "ppo", "env": "CartPole-v1", "checkpoint_step": 7, "episodes": 1, "seed": 0, "sweep": [],
              "runs": runs, "configs": evaluate.config_summaries(runs)}
    console = Console(file=io.StringIO(), width=200)
    console.print(evaluate.results_table(result))
    text = console.file.getvalue()
    assert "1*" in text and "0*" not in text
    caption = " ".join(text.split())  # the caption wraps to the table's width
    assert "stopped on non-finite values: the last good parameters of run(s) 1 (update 3), left out of all" in caption
    all_row = next(line for line in text.splitlines() if "all" in line and "│" in line)
    assert "100.00" in all_row and "90.00" in all_row and "±" not in all_row  # run 1's 10 and 9 are not averaged in
