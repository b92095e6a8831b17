"""Experience collection (jaxrl_po.rollout, jaxrl_po.envs): shapes, episode bookkeeping,
auto-reset observations, action clipping and the running observation statistics."""

from __future__ import annotations

import dataclasses

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

from jaxrl_po.envs import RunningMeanStd, VecEnv, make_vec_env
from jaxrl_po.networks import make_policy
from jaxrl_po.rollout import init_env_carry, rollout


def _rollout(env_name: str, num_envs: int, num_steps: int, normalize_obs: bool, scale_reward: bool, seed: int = 0):
    env = make_vec_env(env_name, num_envs)
    policy = make_policy(env.action_spec, (8,), "tanh")
    k_params, k_env, k_roll = jax.random.split(jax.random.key(seed), 3)
    params = policy.init(k_params, env.obs_dim)  # a fresh (near-uniform) policy
    carry0 = init_env_carry(k_env, env, normalize_obs)
    run = jax.jit(
        lambda key, carry, p: rollout(
            key, carry, p, policy, env, num_steps, normalize_obs, scale_reward, jnp.float32(0.99)
        )
    )
    carry, traj = run(k_roll, carry0, params)
    return env, carry0, carry, jax.tree_util.tree_map(np.asarray, traj)


@pytest.fixture(scope="module")
def cartpole():
    """4 CartPole envs for 150 steps: each env finishes several episodes under a random policy."""
    return _rollout("CartPole-v1", num_envs=4, num_steps=150, normalize_obs=False, scale_reward=False)


@pytest.fixture(scope="module")
def pendulum():
    """3 Pendulum envs for 205 steps: every episode is truncated at 200 steps, never terminated."""
    return _rollout("Pendulum-v1", num_envs=3, num_steps=205, normalize_obs=True, scale_reward=True)


def _check_shapes(env, carry, traj, T, B, action_shape, action_dtype):
    D = env.obs_dim
    chex.assert_shape([traj.obs, traj.final_obs], (T, B, D))
    chex.assert_shape(traj.action, (T, B) + action_shape)
    chex.assert_shape(
        [traj.log_prob, traj.reward, traj.terminated, traj.done, traj.episode_return, traj.episode_length],
        (T, B),
    )
    assert traj.action.dtype == action_dtype
    assert traj.terminated.dtype == np.bool_ and traj.done.dtype == np.bool_
    assert traj.obs.dtype == traj.reward.dtype == traj.log_prob.dtype == np.float32
    assert np.issubdtype(traj.episode_length.dtype, np.integer)
    chex.assert_shape(carry.obs, (B, D))
    chex.assert_shape([carry.episode_return, carry.episode_length, carry.discounted_return], (B,))
    chex.assert_shape([carry.obs_stats.mean, carry.obs_stats.var], (D,))
    for name, x in traj._asdict().items():
        assert np.isfinite(np.asarray(x, np.float64)).all(), name


def test_rollout_shapes_discrete(cartpole):
    env, _, carry, traj = cartpole
    assert env.obs_dim == 4
    _check_shapes(env, carry, traj, T=150, B=4, action_shape=(), action_dtype=np.int32)
    assert set(np.unique(traj.action)) <= {0, 1}


def test_rollout_shapes_continuous(pendulum):
    env, _, carry, traj = pendulum
    assert env.obs_dim == 3
    _check_shapes(env, carry, traj, T=205, B=3, action_shape=(1,), action_dtype=np.float32)
    # Normalisation and reward scaling were on: every observation (the 3 resets, then 3 per step)
    # and every discounted return (3 per step) went into their statistics.
    np.testing.assert_allclose(float(carry.obs_stats.count), 1e-4 + 3 + 3 * 205, rtol=1e-6)
    np.testing.assert_allclose(float(carry.return_stats.count), 1e-4 + 3 * 205, rtol=1e-6)


def test_rollout_first_obs_is_carry_obs(cartpole):
    _, carry0, _, traj = cartpole
    np.testing.assert_array_equal(traj.obs[0], np.asarray(carry0.obs))


def test_episode_stats_across_auto_resets(cartpole):
    _, carry0, carry, traj = cartpole
    T, B = traj.done.shape
    assert traj.done.sum() >= B, "the scenario needs finished episodes"
    assert (traj.done.sum(axis=0) >= 1).all(), "every env should finish an episode"
    assert not traj.terminated[~traj.done].any(), "terminated implies done"
    for b in range(B):
        since_done = int(carry0.episode_length[b])  # 0 after the initial reset
        ret = 0.0
        for t in range(T):
            since_done += 1
            ret += float(traj.reward[t, b])
            if traj.done[t, b]:
                assert traj.episode_length[t, b] == since_done, (t, b)
                assert traj.episode_return[t, b] == pytest.approx(ret), (t, b)
                # CartPole pays 1 per step: return == length.
                assert traj.episode_return[t, b] == traj.episode_length[t, b], (t, b)
                since_done, ret = 0, 0.0
            else:
                assert traj.episode_length[t, b] == 0 and traj.episode_return[t, b] == 0.0, (t, b)
        # The carry holds the running (unfinished) episode.
        assert int(carry.episode_length[b]) == since_done
        assert float(carry.episode_return[b]) == pytest.approx(ret)
    np.testing.assert_array_equal(traj.reward, 1.0)


def test_final_obs_differs_from_next_obs_exactly_where_done(cartpole):
    _, _, carry, traj = cartpole
    next_obs = np.concatenate([traj.obs[1:], np.asarray(carry.obs)[None]], axis=0)
    differs = (traj.final_obs != next_obs).any(axis=-1)
    np.testing.assert_array_equal(differs, traj.done)
    # Where done, the final observation is a failed state (CartPole terminates on |x| > 2.4 or
    # |theta| > 12 degrees) and the next observation is a fresh reset (all |components| <= 0.05).
    end = traj.final_obs[traj.done]
    assert ((np.abs(end[:, 0]) > 2.4) | (np.abs(end[:, 2]) > 12 * 2 * np.pi / 360)).all()
    assert (np.abs(next_obs[traj.done]) <= 0.05).all()


def test_time_limit_is_truncation_not_termination(pendulum):
    # Pendulum never terminates; gymnax cuts its episodes after 200 steps (step index 199).
    env, _, carry, traj = pendulum
    assert env.max_episode_steps == 200
    assert not traj.terminated.any()
    expected_done = np.zeros_like(traj.done)
    expected_done[199] = True
    np.testing.assert_array_equal(traj.done, expected_done)
    np.testing.assert_array_equal(traj.episode_length[199], 200)
    assert (traj.episode_return[199] < 0).all()  # raw (unscaled) Pendulum return: costs
    np.testing.assert_array_equal(carry.episode_length, 5)


# ---- continuous action clipping --------------------------------------------------
def test_out_of_bounds_actions_are_clipped_pendulum():
    env = make_vec_env("Pendulum-v1", 3)
    spec = env.action_spec
    np.testing.assert_array_equal(spec.low, [-2.0])
    np.testing.assert_array_equal(spec.high, [2.0])
    _, state = env.reset(jax.random.split(jax.random.key(0), 3))
    step_keys = jax.random.split(jax.random.key(1), 3)
    wild = jnp.array([[5.0], [-7.5], [1.0]])
    clipped = jnp.array([[2.0], [-2.0], [1.0]])
    a = env.step(step_keys, state, wild)
    b = env.step(step_keys, state, clipped)
    np.testing.assert_array_equal(np.asarray(a.obs), np.asarray(b.obs))
    np.testing.assert_array_equal(np.asarray(a.reward), np.asarray(b.reward))
    np.testing.assert_array_equal(np.asarray(a.final_obs), np.asarray(b.final_obs))


class _EchoEnv:
    """A gymnax-like env whose observation (and reward) is the action it receives."""

    LOW = np.array([-1.0, 0.0], np.float32)
    HIGH = np.array([1.0, 0.5], np.float32)

    def observation_space(self, params):
        return spaces.Box(-jnp.inf, jnp.inf, (2,), jnp.float32)

    def action_space(self, params):
        return spaces.Box(jnp.asarray(self.LOW), jnp.asarray(self.HIGH), (2,), jnp.float32)

    def reset(self, key, params):
        return jnp.zeros(2), jnp.zeros(2)

    def step(self, key, state, action, params):
        false = jnp.array(False)
        return action, state, action.sum(), false, false, {"final_observation": action}


def test_vec_env_passes_clipped_actions_to_the_env():
    # Pendulum clips internally too, so check what actually reaches the environment.
    env = VecEnv(env=_EchoEnv(), params=None, num_envs=3)
    _, state = env.reset(jax.random.split(jax.random.key(0), 3))
    action = jnp.array([[3.0, -2.0], [-0.5, 0.25], [-9.0, 9.0]])
    out = env.step(jax.random.split(jax.random.key(1), 3), state, action)
    np.testing.assert_array_equal(np.asarray(out.obs), [[1.0, 0.0], [-0.5, 0.25], [-1.0, 0.5]])


# ---- running observation statistics ------------------------------------------------
def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)).astype(np.float32) for n in (5, 7, 4)]
    stats = RunningMeanStd.create((3,))
    for batch in batches:
        stats = stats.update(jnp.asarray(batch))
    data = np.concatenate(batches).astype(np.float64)
    # The 1e-4 prior count (mean 0, var 1) is negligible at this tolerance.
    np.testing.assert_allclose(np.asarray(stats.mean), data.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(stats.var), data.var(axis=0), rtol=1e-4)
    np.testing.assert_allclose(float(stats.count), 16.0, rtol=1e-5)


def test_running_mean_std_weighted_rows_are_excluded():
    rng = np.random.default_rng(1)
    first = rng.normal(-1.0, 0.5, size=(10, 2)).astype(np.float32)
    weight = np.array([1, 0, 1, 1, 0, 0, 1, 1, 0, 1], np.float32)
    first[weight == 0] = 1e3  # excluded rows would dominate if they leaked in
    second = rng.normal(2.0, 3.0, size=(6, 2)).astype(np.float32)

    stats = RunningMeanStd.create((2,)).update(jnp.asarray(first), jnp.asarray(weight))
    kept = first[weight == 1].astype(np.float64)
    np.testing.assert_allclose(np.asarray(stats.mean), kept.mean(axis=0), rtol=1e-4)
    # (rtol 1e-3: the 1e-4 prior count is ~1e-4 relative with only 6 rows.)
    np.testing.assert_allclose(np.asarray(stats.var), kept.var(axis=0), rtol=1e-3)
    np.testing.assert_allclose(float(stats.count), weight.sum(), rtol=1e-4)

    stats = stats.update(jnp.asarray(second), jnp.ones(6))
    data = np.concatenate([kept, second.astype(np.float64)])
    np.testing.assert_allclose(np.asarray(stats.mean), data.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(stats.var), data.var(axis=0), rtol=1e-3)

    # An all-zero weight leaves the statistics unchanged.
    same = stats.update(jnp.asarray(second) * 100.0, jnp.zeros(6))
    for a, b in zip(same, stats):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_running_mean_std_scalar_stream():
    # Shape () statistics (the discounted-return scaler) over f32[N] batches.
    rng = np.random.default_rng(2)
    batches = [rng.normal(2.0, 1.5, size=n).astype(np.float32) for n in (8, 3)]
    stats = RunningMeanStd.create(())
    for batch in batches:
        stats = stats.update(jnp.asarray(batch))
    data = np.concatenate(batches).astype(np.float64)
    assert np.shape(stats.mean) == () and np.shape(stats.var) == ()
    np.testing.assert_allclose(float(stats.mean), data.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(stats.var), data.var(), rtol=1e-4)


# ---- every registered environment -----------------------------------------------------------
DOWNLOADS = {"MNISTBandit-bsuite"}  # gymnax fetches MNIST when this env is made: not on an offline CI


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_every_registered_env_traces_through_init_and_update(algo):
    """'Any id in gymnax.registered_envs': a bug here is a JAX traceback at the user's first run.
    (Reacher, Swimmer and PointRobot build their action bounds with jnp ops, which are tracers
    inside a trace unless the bounds are read at compile time.) PPO takes every env; GRPO, whose
    env calls are the same VecEnv's, the continuous ones, where the bounds are used."""
    import gymnax

    from jaxrl_po import grpo, ppo
    from jaxrl_po.config import GRPOConfig, PPOConfig

    names = sorted(set(gymnax.registered_envs) - DOWNLOADS)
    if algo == "grpo":
        names = [name for name in names if not make_vec_env(name, 1).action_spec.discrete]
        assert len(names) == 5, names  # Pendulum, MountainCarContinuous, PointRobot, Reacher, Swimmer
    for name in names:
        if algo == "ppo":
            algorithm = ppo.make_algorithm(PPOConfig(env=name, num_envs=4, num_steps=8, num_minibatches=2,
                                                     total_timesteps=64))
        else:
            config = GRPOConfig(env=name, num_envs=4, num_minibatches=1, total_timesteps=64)
            config = config.replace(grpo=dataclasses.replace(config.grpo, group_size=2, horizon=20, chunk_size=10))
            algorithm = grpo.make_algorithm(config)
        state = jax.eval_shape(algorithm.init, jax.random.key(0), {})
        new_state, _ = jax.eval_shape(algorithm.update, state, {})
        assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state), name


def test_an_env_gymnax_cannot_make_is_a_config_error(monkeypatch):
    import urllib.error

    import gymnax

    from jaxrl_po.config import ConfigError

    def offline(name):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(gymnax, "make", offline)
    with pytest.raises(ConfigError, match="^env: gymnax could not make MNISTBandit-bsuite: <urlopen error") as err:
        make_vec_env("MNISTBandit-bsuite", 4)
    assert err.value.field == "env"


# ---- normalisation against statistics pooled by hand ----------------------------------
PRIOR_COUNT = 1e-4  # RunningMeanStd's starting count, at mean 0 and variance 1


def _pooled_mean_var(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``rows`` [N, ...] pooled with the prior, in one pass (not Chan's running merge)."""
    total = PRIOR_COUNT + len(rows)
    mean = rows.sum(axis=0) / total
    var = (PRIOR_COUNT * (1.0 + mean**2) + ((rows - mean) ** 2).sum(axis=0)) / total
    return mean, var


def _normalised(x: np.ndarray, rows_seen: np.ndarray) -> np.ndarray:
    mean, var = _pooled_mean_var(rows_seen)
    return np.clip((x - mean) / np.sqrt(var + 1e-8), -10.0, 10.0)


def test_normalised_observations_and_scaled_rewards_use_everything_seen_so_far():
    """The stored observations, final observations and rewards of a rollout with normalisation and
    reward scaling on, against statistics recomputed here from the raw stream.

    CartPole cut at 12 steps, so that episodes both terminate and are truncated: the discounted
    return behind reward scaling starts again after either. The actor is zero, so the actions
    (hence the raw stream) do not depend on the normalisation: a second rollout with it off gives
    the raw values. An observation is normalised by the statistics of every observation that
    arrived before it (the resets included); a final observation by those including its own step's
    arrivals; a reward by the std of every discounted return so far, its own step's included.
    """
    base, env_params = gymnax.make("CartPole-v1")
    env = VecEnv(base, env_params.replace(max_steps_in_episode=12), 4)
    policy = make_policy(env.action_spec, (8,), "tanh")
    k_params, k_env, k_roll = jax.random.split(jax.random.key(7), 3)
    params = policy.init(k_params, env.obs_dim)
    params["actor"] = jax.tree_util.tree_map(jnp.zeros_like, params["actor"])  # uniform: actions from the key alone
    gamma, steps = 0.9, 60

    def run(normalize: bool):
        carry0 = init_env_carry(k_env, env, normalize)
        go = jax.jit(lambda key: rollout(key, carry0, params, policy, env, steps, normalize, normalize, jnp.float32(gamma)))
        carry, traj = go(k_roll)
        return carry0, carry, jax.tree_util.tree_map(np.asarray, traj)

    carry0, raw_carry, raw = run(False)
    _, carry, traj = run(True)
    np.testing.assert_array_equal(traj.action, raw.action)
    terminated, truncated = raw.terminated, raw.done & ~raw.terminated
    assert terminated.sum() >= 2 and truncated.sum() >= 2, "the scenario needs both kinds of episode end"

    next_obs = np.concatenate([raw.obs[1:], np.asarray(raw_carry.obs)[None]]).astype(np.float64)
    seen = np.asarray(carry0.obs, np.float64)  # the resets
    returns_seen = np.zeros(0)
    discounted = np.zeros(env.num_envs)
    for t in range(steps):
        np.testing.assert_allclose(traj.obs[t], _normalised(raw.obs[t].astype(np.float64), seen), atol=2e-5)
        seen = np.concatenate([seen, next_obs[t]])
        np.testing.assert_allclose(traj.final_obs[t], _normalised(raw.final_obs[t].astype(np.float64), seen), atol=2e-5)
        discounted = discounted * gamma + raw.reward[t]
        returns_seen = np.concatenate([returns_seen, discounted])
        _, return_var = _pooled_mean_var(returns_seen)
        np.testing.assert_allclose(traj.reward[t], raw.reward[t] / np.sqrt(return_var + 1e-8), rtol=2e-5)
        discounted = np.where(raw.done[t], 0.0, discounted)
    np.testing.assert_allclose(np.asarray(carry.obs_stats.count), PRIOR_COUNT + len(seen), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(carry.discounted_return), discounted, rtol=1e-5)
    # Raw episode statistics are not scaled.
    np.testing.assert_array_equal(traj.episode_return, raw.episode_return)


def test_stored_log_probs_are_those_of_the_stored_observations():
    """With normalisation on, the policy acts on the normalised observation it stores, so the loss's
    first ratio is exactly 1: the log-probability recomputed from the stored (observation, action)
    pair equals the stored one."""
    env = make_vec_env("Pendulum-v1", 3)
    policy = make_policy(env.action_spec, (8,), "tanh")
    k_params, k_env, k_roll = jax.random.split(jax.random.key(1), 3)
    params = policy.init(k_params, env.obs_dim)
    carry0 = init_env_carry(k_env, env, True)
    _, traj = jax.jit(lambda key: rollout(key, carry0, params, policy, env, 20, True, True, jnp.float32(0.99)))(k_roll)
    recomputed = policy.dist(params, traj.obs).log_prob(traj.action)
    np.testing.assert_allclose(np.asarray(recomputed), np.asarray(traj.log_prob), atol=1e-5)
    assert np.abs(np.asarray(traj.obs)).max() > 1.5, "normalised observations should differ visibly from raw ones"
