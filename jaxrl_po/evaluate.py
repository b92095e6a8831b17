"""Evaluate trained policies: ``python -m jaxrl_po.evaluate RUN_DIR [--episodes N] [--seed S] [--render out.gif]``.

Every run of a run directory (seed x swept configuration) restored from its
latest checkpoint plays ``N`` whole episodes with the greedy policy (argmax /
mean) and ``N`` with the stochastic one, all in one ``jit(vmap(...))`` call:
runs on the vmapped axis, the ``2N`` episodes of a run as one batch of envs.
Returns are raw env rewards (never normalised or scaled). Observations are
normalised with the run's saved statistics when the run trained with them, and
continuous actions are clipped to the bounds, exactly as during training.

Episode ``i`` of seed ``S`` always starts from the same state and uses the same
random stream, whatever ``N`` and for every run and both modes (common random
numbers make runs and modes comparable). An episode ends on termination or
truncation, at most ``max_episode_steps`` steps (also for GRPO runs trained
with a shorter ``--grpo.horizon``).

``--render out.gif`` draws greedy episode 0 of one run (``--render-run``) with
gymnax's visualiser. Output: a table, ``RUN_DIR/eval.json`` and the GIF.
Exit codes: 0 done; 2 bad input (one ``error: ...`` line on stderr).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_po.checkpoint import CHECKPOINT_DIR, CheckpointError, has_checkpoint
from jaxrl_po.config import ConfigError, UsageError, check_seed, whole_number_argument
from jaxrl_po.logs import none_if_nan, without_mplbackend
from jaxrl_po.loop import batched_under_vmap, describe_nonfinite
from jaxrl_po.stop import exit_process, run_stoppable, waiting_for_xla
from jaxrl_po.sweep import value_text

if TYPE_CHECKING:  # imported where used: gymnax's import starts JAX's backend, which the CLI checks first
    from jaxrl_po.envs import RunningMeanStd, VecEnv
    from jaxrl_po.networks import Policy

DEFAULT_EPISODES = 10
EVAL_JSON = "eval.json"
MAX_EPISODES = 100_000
"""Per mode and run: 2N envs per run are stepped together, so memory grows with N."""

# Names gymnax's Visualizer can draw (its if-chains in gymnax/visualize/visualizer.py, gymnax 1.0),
# keyed by ``env.name``. The classic-control ones are drawn by gymnasium, which needs pygame.
CLASSIC_CONTROL = ("Acrobot-v1", "CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0")
DRAWABLE = CLASSIC_CONTROL + (
    "Catch-bsuite", "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar", "Pong-misc", "PointRobot-misc", "MetaMaze-misc", "FourRooms-misc",
)
# gymnax.visualize imports matplotlib, gymnasium and seaborn whatever the env: module -> pip install hint.
RENDER_MODULES = {"matplotlib": "matplotlib", "gymnasium": "gymnasium", "seaborn": "seaborn"}
CLASSIC_CONTROL_MODULES = {"pygame": '"gymnasium[classic-control]"'}


# ---- playing episodes (pure JAX) --------------------------------------------------------


class EpisodeCarry(NamedTuple):
    """The state of ``M`` episodes being played in a loop."""

    t: jax.Array  # i32[] steps taken
    state: Any  # gymnax env states, batched [M]
    obs: jax.Array  # f32[M, D] raw observation to act on
    key: jax.Array  # key[M] each episode's own random stream
    alive: jax.Array  # bool[M] the episode has not ended yet
    ret: jax.Array  # f32[M] raw return so far
    length: jax.Array  # i32[M] steps so far


def episode_keys(seed: int, episodes: int) -> jax.Array:
    """key[episodes]; episode i's key is ``fold_in(key(seed), i)``, so it does not depend on ``episodes``."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(episodes, dtype=jnp.uint32))


def start_episodes(env: VecEnv, keys: jax.Array) -> EpisodeCarry:
    """keys: key[M] (M = env.num_envs) -> the carry before step 0: reset with the first half of each split."""
    reset_key, key = _split(keys, 2)
    obs, state = env.reset(reset_key)
    m = env.num_envs
    return EpisodeCarry(jnp.int32(0), state, obs, key, jnp.ones(m, bool), jnp.zeros(m, jnp.float32),
                        jnp.zeros(m, jnp.int32))


def choose_actions(policy: Policy, params: Any, obs_stats: RunningMeanStd | None, obs: jax.Array,
                   keys: jax.Array, greedy: jax.Array) -> jax.Array:
    """obs: f32[M, D] raw; keys: key[M]; greedy: bool[M] -> i32[M] | f32[M, A] (unclipped).

    ``obs_stats`` None: the run trained on raw observations.
    """
    x = obs if obs_stats is None else obs_stats.normalize(obs)
    # One key per episode (not one for the batch) so an episode's actions do not depend on M.
    sampled = jax.vmap(lambda o, k: policy.dist(params, o).sample(seed=k))(x, keys)
    mode = policy.greedy_action(params, x)
    pick = greedy.reshape(greedy.shape + (1,) * (mode.ndim - 1))
    return jnp.where(pick, mode, sampled)


def advance(env: VecEnv, policy: Policy, params: Any, obs_stats: RunningMeanStd | None, greedy: jax.Array,
            carry: EpisodeCarry) -> tuple[EpisodeCarry, jax.Array]:
    """One step of every episode -> (carry, raw reward f32[M]). Ended episodes keep stepping (auto-reset)
    but no longer count."""
    key, act_key, env_key = _split(carry.key, 3)
    action = choose_actions(policy, params, obs_stats, carry.obs, act_key, greedy)
    out = env.step(env_key, carry.state, action)  # clips continuous actions like training does
    done = jnp.logical_or(out.terminated, out.truncated)
    ret = carry.ret + jnp.where(carry.alive, out.reward, 0.0)
    length = carry.length + carry.alive.astype(jnp.int32)
    alive = jnp.logical_and(carry.alive, jnp.logical_not(done))
    return EpisodeCarry(carry.t + 1, out.state, out.obs, key, alive, ret, length), out.reward


def play_episodes(env: VecEnv, policy: Policy, params: Any, obs_stats: RunningMeanStd | None,
                  keys: jax.Array, greedy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Play ``M = env.num_envs`` whole episodes of one run.

    keys: key[M] (see :func:`episode_keys`); greedy: bool[M] per episode.
    Returns (returns f32[M], lengths i32[M]); the loop stops once every episode
    has ended, or after ``env.max_episode_steps`` steps.
    """
    limit = env.max_episode_steps

    def keep_going(carry: EpisodeCarry) -> jax.Array:
        return jnp.logical_and(carry.alive.any(), carry.t < limit)

    def body(carry: EpisodeCarry) -> EpisodeCarry:
        return advance(env, policy, params, obs_stats, greedy, carry)[0]

    final = jax.lax.while_loop(keep_going, body, batched_under_vmap(start_episodes(env, keys)))
    return final.ret, final.length


def record_episode(env: VecEnv, policy: Policy, params: Any, obs_stats: RunningMeanStd | None,
                   key: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
    """One greedy episode (``env.num_envs == 1``), every step recorded.

    Returns (states: env states [T, 1] before each step, rewards f32[T], length i32[]),
    T = env.max_episode_steps; steps from ``length`` on are past the episode's end.
    """

    def step(carry: EpisodeCarry, _) -> tuple[EpisodeCarry, tuple[Any, jax.Array]]:
        new, reward = advance(env, policy, params, obs_stats, jnp.ones(1, bool), carry)
        return new, (carry.state, reward[0])

    final, (states, rewards) = jax.lax.scan(step, start_episodes(env, key[None]), None,
                                            length=env.max_episode_steps)
    return states, rewards, final.length[0]


def _split(keys: jax.Array, num: int) -> tuple[jax.Array, ...]:
    """key[M] -> num arrays key[M] (each key split independently)."""
    parts = jax.vmap(lambda k: jax.random.split(k, num))(keys)
    return tuple(parts[:, i] for i in range(num))


# ---- a run directory's policies -------------------------------------------------------


class Policies(NamedTuple):
    """What it takes to act like the trained runs (R runs)."""

    policy: Policy
    params: Any  # leading axis R
    obs_stats: RunningMeanStd | None  # leading axis R; None when the runs trained on raw observations


def load_run(run_dir: str | os.PathLike, writing: bool = False):
    """:func:`jaxrl_po.runner.load_trained`, with one-line errors for a missing dir or checkpoint;
    ``writing``: and where eval.json cannot be written there (checked before anything is restored)."""
    from jaxrl_po.runner import load_trained

    if not os.fspath(run_dir).strip():  # Path("") would be the current directory
        raise ConfigError("run_dir", f"must name a run directory, got {os.fspath(run_dir)!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError("run_dir", f"{run_dir} is not a directory")
    if not (run_dir / "config.json").is_file():
        raise ConfigError("run_dir", f"{run_dir} is not a run directory (no config.json)")
    # Checked here, before load_trained builds the algorithm and traces its init to restore into.
    if not has_checkpoint(run_dir):
        raise ConfigError("run_dir", f"no checkpoint in {run_dir / CHECKPOINT_DIR}")
    if writing:
        if (run_dir / EVAL_JSON).is_dir():
            raise ConfigError("run_dir", f"cannot write {run_dir / EVAL_JSON}: it is a directory")
        check_can_write_in(run_dir, "run_dir")
    return load_trained(run_dir)


def trained_policies(trained) -> Policies:
    """The policy network, params and observation statistics of every run in a TrainedRuns."""
    from jaxrl_po.envs import make_vec_env
    from jaxrl_po.networks import policy_for
    from jaxrl_po.ppo import uses_obs_normalization

    config = trained.config
    env = make_vec_env(config.env, 1)
    spec = env.action_spec
    policy = policy_for(config, env, with_critic=trained.algo_name == "ppo")
    state = trained.state
    stats = state.env.obs_stats if trained.algo_name == "ppo" else state.obs_stats
    return Policies(policy, state.params, stats if uses_obs_normalization(config, spec.discrete) else None)


def num_runs(trained) -> int:
    return len(trained.seeds)


# ---- evaluation -----------------------------------------------------------------------


def evaluate_trained(trained, episodes: int = DEFAULT_EPISODES, seed: int = 0) -> dict[str, Any]:
    """Play ``episodes`` greedy and ``episodes`` stochastic episodes per run -> the eval.json dict."""
    from jaxrl_po.envs import make_vec_env

    check_episodes(episodes)
    check_seed(seed)
    policies = trained_policies(trained)
    env = make_vec_env(trained.config.env, 2 * episodes)
    keys = jnp.concatenate([episode_keys(seed, episodes)] * 2)  # the same starts for both modes
    greedy = jnp.arange(2 * episodes) < episodes
    play = lambda params, stats: play_episodes(env, policies.policy, params, stats, keys, greedy)
    with waiting_for_xla():  # block_until_ready, unlike np.asarray, lets a second stop through
        returns, lengths = jax.block_until_ready(jax.jit(jax.vmap(play))(policies.params, policies.obs_stats))
    returns, lengths = np.asarray(returns, np.float64), np.asarray(lengths)  # [R, 2N] each
    # A run stopped by non-finite values kept its last good parameters, from an earlier update.
    updates, codes = np.asarray(trained.state.update), np.asarray(trained.state.nonfinite)
    runs = []
    for r in range(num_runs(trained)):
        modes = {name: mode_summary(returns[r, part], lengths[r, part])
                 for name, part in (("greedy", slice(0, episodes)), ("stochastic", slice(episodes, None)))}
        stopped = describe_nonfinite(int(codes[r])) if codes[r] else None
        runs.append({"run": r, "seed": trained.seeds[r], "settings": trained.settings[r], "update": int(updates[r]),
                     "stopped_nonfinite": stopped, **modes})
    return {
        "algo": trained.algo_name,
        "env": trained.config.env,
        "checkpoint_step": int(trained.step),
        "episodes": episodes,
        "seed": seed,
        "max_episode_steps": env.max_episode_steps,
        "obs_normalized": policies.obs_stats is not None,
        "sweep": list(trained.settings[0]),  # swept names, in the order of the sweep grid
        "runs": runs,
        "configs": config_summaries(runs),
    }


def config_summaries(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration (each swept one, or the one of a run without a sweep), in grid order: its runs and,
    per mode, the mean over them of each run's mean return with the half-width of its 95% Student-t
    interval (``ci95``; None for fewer than two runs) and ``n``. Runs stopped on non-finite values are
    left out: they are scored with parameters from an earlier update."""
    from jaxrl_po.sweep import confidence_interval, config_key

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in runs:
        groups.setdefault(config_key(row["settings"]), []).append(row)
    summaries = []
    for rows in groups.values():
        healthy = [row for row in rows if not row["stopped_nonfinite"]]
        summary = {"settings": rows[0]["settings"], "runs": [row["run"] for row in healthy]}
        for mode in ("greedy", "stochastic"):
            means = np.array([np.nan if row[mode]["mean"] is None else row[mode]["mean"] for row in healthy], float)
            mean, half = confidence_interval(means)
            summary[mode] = {"mean": none_if_nan(mean), "ci95": none_if_nan(half), "n": int(np.isfinite(means).sum())}
        summaries.append(summary)
    return summaries


def mode_summary(returns: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
    """returns: f[N], lengths: i[N] -> per-episode lists and mean / std (population std, ddof 0)."""
    return {
        "returns": [none_if_nan(float(x)) for x in returns],
        "lengths": [int(x) for x in lengths],
        "mean": none_if_nan(float(np.mean(returns))),
        "std": none_if_nan(float(np.std(returns))),
        "mean_length": float(np.mean(lengths)),
    }


def evaluate_run(run_dir: str | os.PathLike, episodes: int = DEFAULT_EPISODES, seed: int = 0,
                 write: bool = False) -> dict[str, Any]:
    """Evaluate every run of ``run_dir`` (see the module docstring); ``write`` also saves RUN_DIR/eval.json.

    Returns the eval.json content: algo, env, checkpoint_step, episodes, seed,
    max_episode_steps, obs_normalized, sweep (swept names), ``runs``: per run
    its index, seed, settings and, for "greedy" and "stochastic", the per-episode
    returns and lengths with their mean and std; and ``configs``
    (:func:`config_summaries`): per configuration, the mean over its seeds with a 95% CI.
    Raises :class:`ConfigError` or :class:`jaxrl_po.checkpoint.CheckpointError`.
    """
    check_episodes(episodes)
    check_seed(seed)
    result = evaluate_trained(load_run(run_dir, writing=write), episodes, seed)
    if write:
        write_eval_json(Path(run_dir), result)
    return result


def write_eval_json(run_dir: Path, result: dict[str, Any]) -> Path:
    from jaxrl_po.logs import write_json

    path = run_dir / EVAL_JSON
    try:
        write_json(path, result)  # atomic: temp file + rename
    except OSError as err:
        raise ConfigError("run_dir", f"cannot write {path}: {err.strerror or err}") from None
    return path


def check_episodes(episodes: Any) -> None:
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or not 1 <= episodes <= MAX_EPISODES:
        raise ConfigError("episodes", f"must be an integer from 1 to {MAX_EPISODES:,}, got {episodes!r}")


# ---- rendering ------------------------------------------------------------------------


def check_renderable(env_name: str, available: Callable[[str], bool] | None = None) -> None:
    """Raise :class:`ConfigError` (field "render") unless gymnax can draw ``env_name`` here.

    ``available(module) -> bool`` tells whether a module can be imported (default: importlib's find_spec).
    """
    from jaxrl_po.envs import make_vec_env

    available = available or _module_available
    env = make_vec_env(env_name, 1).env
    if env.name not in DRAWABLE:
        raise ConfigError("render", f"gymnax cannot draw {env_name}; drawable: {', '.join(DRAWABLE)}")
    needed = dict(RENDER_MODULES)
    if env.name in CLASSIC_CONTROL:
        needed.update(CLASSIC_CONTROL_MODULES)
    missing = [m for m in needed if not available(m)]
    if missing:
        installs = " ".join(dict.fromkeys(needed[m] for m in missing))
        raise ConfigError("render", f"drawing {env_name} needs {', '.join(missing)}, which is not installed; "
                                     f"pip install {installs}")


def check_render_path(out_path: str | os.PathLike, overwrite: bool = True) -> Path:
    """The GIF path, or :class:`ConfigError` (field "render"); ``overwrite=False`` also refuses an existing file."""
    out = Path(out_path)
    if out.suffix.lower() != ".gif":
        raise ConfigError("render", f"the output must be a .gif file, got {str(out_path)!r}")  # '' is Path '.'
    if not out.parent.is_dir():
        raise ConfigError("render", f"cannot write {out}: no directory {out.parent}")
    if not overwrite and out.exists():
        raise ConfigError("render", f"{out} already exists; pass --overwrite to replace it, or name another file")
    check_can_write_in(out.parent, "render")
    return out


def check_can_write_in(directory: Path, field: str) -> None:
    """:class:`ConfigError` (``field``) unless this user may make files in ``directory`` (``os.access``, as
    ``train`` checks a run directory to resume): checked before evaluating, so the result is not lost at the end."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(field, f"cannot write in {directory} (no permission, or a read-only file system)")


def check_run_index(trained, run: Any) -> int:
    count = num_runs(trained)
    if isinstance(run, bool) or not isinstance(run, (int, np.integer)) or not 0 <= run < count:
        raise ConfigError("render_run", f"must be a run index from 0 to {count - 1} (this directory has "
                                         f"{count} run(s)), got {run!r}")
    return int(run)


def render_trained(trained, out_path: str | os.PathLike, run: int = 0, seed: int = 0) -> tuple[Path, int]:
    """Draw greedy episode 0 (seed ``seed``) of run ``run`` to a GIF -> (path, frames).

    It is the episode that :func:`evaluate_trained` plays first with the same seed.
    """
    from jaxrl_po.envs import make_vec_env

    check_renderable(trained.config.env)
    out = check_render_path(out_path)
    run = check_run_index(trained, run)
    check_seed(seed)
    policies = trained_policies(trained)
    env = make_vec_env(trained.config.env, 1)
    one = lambda tree: None if tree is None else jax.tree_util.tree_map(lambda x: x[run], tree)
    with waiting_for_xla():  # block_until_ready, unlike device_get, lets a second stop through
        states, rewards, length = jax.block_until_ready(jax.jit(
            lambda p, s, k: record_episode(env, policies.policy, p, s, k)
        )(one(policies.params), one(policies.obs_stats), episode_keys(seed, 1)[0]))
    length = int(length)
    states, rewards = jax.device_get((states, rewards))
    frames = [jax.tree_util.tree_map(lambda x: x[t, 0], states) for t in range(length)]
    cumulative = np.cumsum(np.asarray(rewards)[:length])
    draw_gif(env.env, env.params, frames, cumulative, out)
    return out, length


def draw_gif(env: Any, env_params: Any, states: list, returns: np.ndarray, out: Path) -> None:
    """gymnax's Visualizer -> ``out`` (written to a temp file first, so a failure leaves no half GIF)."""
    # pygame (classic control) draws off-screen: no display, no sound card.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    from gymnax.visualize import Visualizer

    from jaxrl_po.logs import replace_whole

    try:
        replace_whole(out, lambda tmp: Visualizer(env, env_params, states, returns).animate(str(tmp)))
    except OSError as err:
        raise ConfigError("render", f"cannot write {out}: {err.strerror or err}") from None


def render_episode(run_dir: str | os.PathLike, out_path: str | os.PathLike, run: int = 0, seed: int = 0) -> Path:
    """Draw one greedy episode of run ``run`` of ``run_dir`` to the GIF ``out_path``; returns its path.

    Raises :class:`ConfigError` (env gymnax cannot draw, missing package, bad path
    or run index) or :class:`jaxrl_po.checkpoint.CheckpointError`.
    """
    check_render_path(out_path)
    check_seed(seed)
    trained = load_run(run_dir)
    return render_trained(trained, out_path, run, seed)[0]


def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# ---- output ---------------------------------------------------------------------------


def results_table(result: dict[str, Any]):
    """A rich Table: one row per run (index, seed, swept values), greedy and stochastic mean ± std over its
    episodes; where a configuration has several runs, an ``all`` row per configuration (mean ± 95% CI)."""
    from rich.table import Table

    table = Table(title=f"{result['algo'].upper()} on {result['env']}: episode return per run",
                  caption=f"{result['episodes']} episode(s) per mode and run, eval seed {result['seed']}, "
                          f"checkpoint at update {result['checkpoint_step']}")
    names = result["sweep"]
    for column in ("run", "seed", *names):
        table.add_column(column, justify="right")
    for column in ("greedy", "stochastic", "greedy length"):
        table.add_column(column, justify="right")
    for row in result["runs"]:
        table.add_row(f"{row['run']}{'*' if row['stopped_nonfinite'] else ''}", str(row["seed"]),
                      *[value_text(row['settings'][n]) for n in names],
                      _mean_std(row["greedy"]), _mean_std(row["stochastic"]), f"{row['greedy']['mean_length']:.1f}")
    configs = result["configs"]
    with_all = len(result["runs"]) > len(configs)  # some configuration has several seeds
    if with_all:
        for config in configs:
            table.add_row("all", "", *[value_text(config["settings"][n]) for n in names],
                          _mean_ci(config["greedy"]), _mean_ci(config["stochastic"]), "", style="bold")
        table.caption += "\nall: the mean of the runs' means ± the half-width of its 95% CI (Student t)"
    stopped = [f"{row['run']} (update {row['update']})" for row in result["runs"] if row["stopped_nonfinite"]]
    if stopped:
        table.caption += (f"\n* stopped on non-finite values: the last good parameters of run(s) {', '.join(stopped)}"
                          f"{', left out of all' if with_all else ''}")
    return table


def _mean_std(mode: dict[str, Any]) -> str:
    return "n/a" if mode["mean"] is None else _plus_minus(mode["mean"], mode["std"])


def _plus_minus(mean: float, spread: float) -> str:
    """One format for every cell (two decimals: returns of CartPole's 500 and Catch's 1 alike)."""
    return f"{mean:.2f} ± {spread:.2f}"


def _mean_ci(summary: dict[str, Any]) -> str:
    """A configuration's ``all`` cell: mean ± 95% CI half-width, the mean alone for one run, n/a for none.
    (``logs.mean_ci_text``'s cases, in this table's fixed two decimals.)"""
    if summary["mean"] is None:
        return "n/a"
    return f"{summary['mean']:.2f}" if summary["ci95"] is None else _plus_minus(summary["mean"], summary["ci95"])


# ---- command line ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, through main's handler
        field = ""
        if message.startswith("argument "):
            flag, _, message = message[len("argument "):].partition(": ")
            field = flag.split("/")[0].lstrip("-").replace("-", "_")
        raise ConfigError(field, message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m jaxrl_po.evaluate",
                description="Play greedy and stochastic episodes with every run of a run directory.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by python -m jaxrl_po.train")
    p.add_argument("--episodes", type=whole_number_argument, default=DEFAULT_EPISODES, metavar="N", help="episodes per mode and run (default 10)")
    p.add_argument("--seed", type=whole_number_argument, default=0, metavar="S", help="evaluation seed: picks the episodes' starts (default 0)")
    p.add_argument("--render", metavar="OUT.gif", default=None,
                   help="also draw one greedy episode to this GIF (gymnax's visualiser)")
    p.add_argument("--overwrite", action="store_true", help="with --render: replace the GIF if it exists (without it an "
                   "existing file is refused; eval.json is derived from the run and always replaced)")
    p.add_argument("--render-run", type=whole_number_argument, default=None, metavar="R",
                   help="with --render: which run to draw (the table's run index, default 0)")
    p.add_argument("--render-seed", type=whole_number_argument, default=None, metavar="K",
                   help="with --render: seed of the drawn episode (default --seed: greedy episode 0 of the table)")
    return p


def flag(field: str) -> str:
    """How an error names its argument: ``--episodes``, ``RUN_DIR`` (nothing for a whole-command-line error)."""
    if field in ("", "run_dir"):
        return field and "RUN_DIR"
    return "--" + field.replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        with without_mplbackend():  # --render draws with Agg
            return run_stoppable(lambda: run_cli(argv))  # Ctrl-C, SIGTERM: one line, exit code 128 + signal
    except ConfigError as err:
        where = flag(err.field)
        print(f"error: {where + ': ' if where else ''}{err.message}", file=sys.stderr)
        return 2
    except (UsageError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run_cli(argv: list[str]) -> int:
    """Parse, then :func:`run`."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    return run(args)


def run(args: argparse.Namespace) -> int:
    from jaxrl_po.layout import start_backend
    from jaxrl_po.logs import make_console, print_table

    start_backend()
    check_episodes(args.episodes)
    check_seed(args.seed)
    if args.render is None:  # a drawing option alone would be ignored: say so rather than exit 0
        for name in ("render_run", "render_seed", "overwrite"):
            if getattr(args, name) not in (None, False):
                raise ConfigError(name, "only applies with --render OUT.gif (eval.json is always replaced)")
    render_run = args.render_run or 0
    render_seed = args.seed if args.render_seed is None else args.render_seed
    if args.render is not None:
        check_render_path(args.render, args.overwrite)
        check_seed(render_seed, "render_seed")
    trained = load_run(args.run_dir, writing=True)
    if args.render is not None:  # before the evaluation, so a bad --render fails fast
        check_renderable(trained.config.env)
        check_run_index(trained, render_run)
    console = make_console()
    result = evaluate_trained(trained, args.episodes, args.seed)
    print_table(console, results_table(result))
    console.print(f"wrote {write_eval_json(Path(args.run_dir), result)}")
    if args.render is not None:
        import matplotlib

        matplotlib.use("Agg")  # the visualiser uses pyplot; a command line never needs a window
        path, frames = render_trained(trained, args.render, render_run, render_seed)
        console.print(f"wrote {path} ({frames} frames)")
    return 0


if __name__ == "__main__":
    exit_process(main())
