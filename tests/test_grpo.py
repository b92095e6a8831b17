"""GRPO end to end: group resets, per-member sampling, shared step keys, rollout masking,
the compiled trainer and its metrics, option variants, group selection and config validation."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrl_po.advantages import group_spread
from jaxrl_po.config import ConfigError, GRPOConfig, GRPOOptions
from jaxrl_po.envs import RunningMeanStd, make_vec_env
from jaxrl_po import make_train
from jaxrl_po.grpo import GRPOMetrics, keep_widest_groups, make_algorithm, to_groups
from jaxrl_po.networks import make_policy, policy_for
from jaxrl_po.rollout import episode_rollout, group_keys




def rollout(env_name, num_groups, group_size, horizon, chunk_size, shared=False, seed=0, params=None, hidden=(8,)):
    env = make_vec_env(env_name, num_groups * group_size)
    policy = make_policy(env.action_spec, hidden, "tanh", with_critic=False)
    if params is None:
        params = policy.init(jax.random.PRNGKey(1000 + seed), env.obs_dim)
    run = jax.jit(
        lambda key, p: episode_rollout(key, p, policy, env, None, group_size, horizon, chunk_size, shared)
    )
    episodes, steps_run = run(jax.random.PRNGKey(seed), params)
    return env, policy, params, jax.tree_util.tree_map(np.asarray, episodes), int(steps_run)


# One compiled rollout per env, shared by the tests below.
CARTPOLE = dict(num_groups=2, group_size=8, horizon=500, chunk_size=20)
PENDULUM = dict(num_groups=2, group_size=2, horizon=25, chunk_size=10)


@pytest.fixture(scope="module")
def cartpole_rollout():
    return rollout("CartPole-v1", **CARTPOLE)


@pytest.fixture(scope="module")
def pendulum_rollout():
    return rollout("Pendulum-v1", **PENDULUM)


def grouped(x: np.ndarray, group_size: int) -> np.ndarray:
    """[B, ...] -> [G, K, ...]."""
    return x.reshape((-1, group_size) + x.shape[1:])


# ---- (1) group resets -------------------------------------------------------------------
@pytest.mark.parametrize("env_name", ["CartPole-v1", "Pendulum-v1"])
def test_group_reset_same_start_within_group_different_across(env_name):
    num_groups, group_size = 3, 4
    env = make_vec_env(env_name, num_groups * group_size)
    obs, _ = env.reset(group_keys(jax.random.PRNGKey(0), num_groups, group_size))
    obs = grouped(np.asarray(obs), group_size)
    for g in range(num_groups):
        assert np.all(obs[g] == obs[g, :1]), "members of a group must start identically"
    for a in range(num_groups):
        for b in range(a + 1, num_groups):
            assert not np.array_equal(obs[a, 0], obs[b, 0]), "different groups should start differently"


@pytest.mark.parametrize("which", ["cartpole_rollout", "pendulum_rollout"])
def test_episode_rollout_starts_each_group_from_one_state(which, request):
    _, _, _, episodes, _ = request.getfixturevalue(which)
    group_size = (CARTPOLE if which == "cartpole_rollout" else PENDULUM)["group_size"]
    first = grouped(episodes.obs[0], group_size)
    assert np.all(first == first[:, :1])
    assert not np.array_equal(first[0, 0], first[1, 0])


# ---- (2) members act with their own randomness --------------------------------------------
def test_group_members_sample_their_own_actions(cartpole_rollout):
    group_size = CARTPOLE["group_size"]
    _, _, _, episodes, _ = cartpole_rollout
    actions = grouped(episodes.action[:5].T, group_size)  # [G, K, 5]; CartPole lives > 5 steps
    assert episodes.alive[:5].all()
    for g in range(actions.shape[0]):
        assert len({tuple(a) for a in actions[g]}) > 1, "all members of a group took identical actions"
    # ... and so their trajectories diverge from the shared start.
    obs = grouped(np.swapaxes(episodes.obs[:6], 0, 1), group_size)  # [G, K, T, D]
    assert not np.all(obs[:, :, -1] == obs[:, :1, -1])


# ---- (3) shared step keys --------------------------------------------------------------------
def test_group_keys_rows_shared_within_group_distinct_across():
    keys = np.asarray(group_keys(jax.random.PRNGKey(3), 3, 4))
    assert keys.shape[0] == 12
    per_group = keys.reshape((3, 4) + keys.shape[1:])
    assert np.all(per_group == per_group[:, :1])
    assert len({per_group[g, 0].tobytes() for g in range(3)}) == 3


def _always_action_zero(policy, params):
    """Params whose policy picks action 0 with probability ~1 (logit gap 40)."""
    head = max(params["actor"]["params"], key=lambda name: int(name.split("_")[-1]))
    layer = params["actor"]["params"][head]
    bias = jnp.zeros_like(layer["bias"]).at[0].set(40.0)
    new = {**params["actor"]["params"], head: {"kernel": jnp.zeros_like(layer["kernel"]), "bias": bias}}
    return {**params, "actor": {"params": new}}


def test_shared_step_keys_give_identical_transitions_for_identical_actions():
    # Asterix-MinAtar resets deterministically and spawns enemies with the step key. Every
    # member plays action 0, so with shared step keys the members of a group must see identical
    # transitions, while the two groups (same start, same actions, different keys) diverge,
    # which shows the env really uses its step key.
    env = make_vec_env("Asterix-MinAtar", 4)
    policy = make_policy(env.action_spec, (4,), "tanh", with_critic=False)
    params = _always_action_zero(policy, policy.init(jax.random.PRNGKey(0), env.obs_dim))
    _, _, _, episodes, steps_run = rollout(
        "Asterix-MinAtar", num_groups=2, group_size=2, horizon=30, chunk_size=30, shared=True, params=params,
        hidden=(4,),
    )
    assert np.all(episodes.action == 0)
    obs = grouped(np.swapaxes(episodes.obs[:steps_run], 0, 1), 2)  # [G, K, T, D]
    reward = grouped(episodes.reward[:steps_run].T, 2)
    alive = grouped(episodes.alive[:steps_run].T, 2)
    for g in range(2):
        np.testing.assert_array_equal(obs[g, 0], obs[g, 1])
        np.testing.assert_array_equal(reward[g, 0], reward[g, 1])
        np.testing.assert_array_equal(alive[g, 0], alive[g, 1])
    np.testing.assert_array_equal(obs[0, 0, 0], obs[1, 0, 0])  # same start in both groups
    assert not np.array_equal(obs[0, 0], obs[1, 0]), "Asterix should diverge under different step keys"


# ---- (4) masking in the rollout -------------------------------------------------------------
def _replay_first_done(env, first_obs, actions):
    """Replay CartPole (deterministic; obs == state) from ``first_obs`` -> first done index per env."""
    from gymnax.environments.classic_control.cartpole import EnvState

    f32 = jnp.asarray(first_obs)
    state = EnvState(x=f32[:, 0], x_dot=f32[:, 1], theta=f32[:, 2], theta_dot=f32[:, 3],
                     time=jnp.zeros(f32.shape[0], jnp.int32))
    keys = jax.random.split(jax.random.PRNGKey(0), env.num_envs)

    def step(state, action):
        out = env.step(keys, state, action)
        return out.state, jnp.logical_or(out.terminated, out.truncated)

    _, done = jax.lax.scan(step, state, jnp.asarray(actions))
    done = np.asarray(done)
    return np.where(done.any(0), done.argmax(0), -1)


def test_rollout_alive_mask_and_early_stop_cartpole(cartpole_rollout):
    horizon, chunk_size = CARTPOLE["horizon"], CARTPOLE["chunk_size"]
    env, _, _, episodes, steps_run = cartpole_rollout
    alive = episodes.alive
    B = alive.shape[1]
    assert alive.shape[0] == horizon  # 25 chunks of 20
    # Stopped early, after whole chunks, and not a chunk too late.
    assert 0 < steps_run < horizon and steps_run % chunk_size == 0
    assert alive[steps_run - chunk_size].any(), "ran a chunk in which every episode had already ended"
    assert not alive[steps_run:].any(), "steps never executed are padding"
    # Monotone: True from the start up to the end, then False, never True again.
    assert alive[0].all()
    assert not np.any(alive[1:] & ~alive[:-1])
    lengths = alive.sum(0)
    np.testing.assert_array_equal(alive, np.arange(horizon)[:, None] < lengths[None, :])
    # Env-level check: the last alive step is exactly each env's first done, and every
    # env's episode ended within the executed steps (alive is False after the last one).
    first_done = _replay_first_done(env, episodes.obs[0], episodes.action[:steps_run])
    assert np.all(first_done >= 0)
    np.testing.assert_array_equal(first_done, lengths - 1)
    padded = steps_run * B - alive.sum()
    assert padded == np.sum(steps_run - lengths) and padded >= 0
    # CartPole pays +1 on every step, also on padding; the alive sum is the episode length.
    assert np.all(episodes.reward[:steps_run] == 1.0)


def test_rollout_steps_beyond_horizon_not_alive(pendulum_rollout):
    # Pendulum never terminates: every member is alive for exactly `horizon` steps.
    horizon = PENDULUM["horizon"]
    _, _, _, episodes, steps_run = pendulum_rollout
    assert steps_run == 30  # ceil(25 / 10) chunks
    assert episodes.alive.shape[0] == 30
    assert episodes.alive[:horizon].all()
    assert not episodes.alive[horizon:].any()


def test_a_chunk_longer_than_the_horizon_is_cut_to_it():
    """chunk_size 2000 with horizon 20 runs 20 steps (not 2000, 1980 of them padding), and the
    memory check counts the buffer the rollout really keeps: whole chunks covering the horizon."""
    from jaxrl_po.rollout import episode_buffer_length
    from jaxrl_po.runner import rollout_buffer_bytes

    _, _, _, episodes, steps_run = rollout("Pendulum-v1", num_groups=1, group_size=2, horizon=20, chunk_size=2000)
    assert steps_run == 20 and episodes.alive.shape[0] == 20 and episodes.alive.all()
    assert [episode_buffer_length(20, c) for c in (2000, 20, 8, 1)] == [20, 20, 24, 20]
    config = GRPOConfig(env="Pendulum-v1", num_envs=4, num_minibatches=1, total_timesteps=8,
                        grpo=GRPOOptions(group_size=2, horizon=20, chunk_size=2000))
    per_step = rollout_buffer_bytes(config.replace(grpo=dataclasses.replace(config.grpo, chunk_size=20))) // 20
    assert rollout_buffer_bytes(config) == 20 * per_step
    assert rollout_buffer_bytes(config.replace(grpo=dataclasses.replace(config.grpo, chunk_size=8))) == 24 * per_step


def test_to_groups_layout():
    H, B, D, K = 3, 6, 2, 3
    x = np.arange(H * B * D).reshape(H, B, D)
    y = np.asarray(to_groups(jnp.asarray(x), B // K))
    assert y.shape == (B // K, K, H, D)
    for t in range(H):
        for b in range(B):
            np.testing.assert_array_equal(y[b // K, b % K, t], x[t, b])


# ---- (5) the compiled trainer ---------------------------------------------------------------
TINY = GRPOConfig(
    num_envs=8,
    grpo=GRPOOptions(group_size=4, horizon=30, chunk_size=10),
    num_minibatches=2,
    update_epochs=1,
    total_timesteps=600,
    hidden_sizes=(16,),
)


@pytest.fixture(scope="module")
def tiny_run():
    train = jax.jit(jax.vmap(make_train(TINY)))
    keys = jax.random.split(jax.random.PRNGKey(42), 2)
    first = jax.tree_util.tree_map(np.asarray, train(keys))
    second = jax.tree_util.tree_map(np.asarray, train(keys))
    return first, second


def test_train_metrics_buffer_and_step_count(tiny_run):
    out, _ = tiny_run
    m = out.metrics
    assert m.env_steps.shape == (2, TINY.max_updates) == (2, 75)
    for s in range(2):
        steps = m.env_steps[s]
        ran = steps > 0
        n = int(ran.sum())
        assert n >= 2 and ran[:n].all() and not ran[n:].any()
        assert np.all(np.diff(steps[:n]) > 0)
        assert int(out.state.update[s]) == n
        # Budget: stopped at the first update that reached total_timesteps.
        assert steps[n - 1] >= TINY.total_timesteps > steps[n - 2]
        assert int(out.state.env_steps[s]) == steps[n - 1]
        # Only alive steps count; padding does not.
        np.testing.assert_array_equal(steps[:n], np.cumsum(m.alive_steps[s, :n]).astype(np.int64))
        for name in GRPOMetrics._fields:
            value = getattr(m, name)[s]
            if name in ("env_steps", "nonfinite"):  # integer columns: 0 in rows never run
                assert np.all(value[n:] == 0)
            else:
                assert np.all(np.isnan(value[n:])), f"{name}: rows never run must be NaN"
                assert np.all(np.isfinite(value[:n])), f"{name}: rows that ran must be finite"


def test_train_episode_statistics(tiny_run):
    out, _ = tiny_run
    m = out.metrics
    B, H = TINY.num_envs, TINY.grpo.horizon
    for s in range(2):
        n = int(out.state.update[s])
        alive, padded = m.alive_steps[s, :n], m.padded_steps[s, :n]
        np.testing.assert_allclose(m.episode_length[s, :n] * m.episodes[s, :n], alive, rtol=1e-6)
        assert np.all(m.episodes[s, :n] == B)
        assert np.all((alive >= B) & (alive <= B * H))
        # Every step executed is alive or padding, in whole chunks of all envs.
        executed = alive + padded
        assert np.all(padded >= 0)
        assert np.all(executed % (TINY.grpo.chunk_size * B) == 0)
        assert np.all(executed <= B * 30)
        # CartPole pays +1 per alive step: mean return == mean length.
        np.testing.assert_allclose(m.episode_return[s, :n], m.episode_length[s, :n], rtol=1e-6)
        assert np.all((m.zero_spread_frac[s, :n] >= 0) & (m.zero_spread_frac[s, :n] <= 1))
        np.testing.assert_allclose(m.lr[s, :n], TINY.lr, rtol=1e-6)  # anneal_lr is off
        assert np.all(m.kl_ref[s, :n] >= 0)  # measured (k3 >= 0) even with kl_coef 0
        assert np.any(m.kl_ref[s, :n] > 0)  # the policy moves away from its reference


def test_train_is_deterministic_and_seeds_differ(tiny_run):
    first, second = tiny_run
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(second)):
        np.testing.assert_array_equal(a, b)  # bit-identical, NaN rows included
    # The two seeds are different runs (int buffers: no NaN == NaN pitfalls).
    assert not np.array_equal(first.metrics.env_steps[0], first.metrics.env_steps[1])


# ---- (6) option variants --------------------------------------------------------------------
def _variant(total=200, gamma=1.0, **grpo):
    opts = dict(group_size=4, horizon=20, chunk_size=10)
    opts.update(grpo)
    return GRPOConfig(num_envs=8, grpo=GRPOOptions(**opts), num_minibatches=2, update_epochs=1,
                      total_timesteps=total, hidden_sizes=(8,), gamma=gamma)


# Options are combined so that each of them is compiled once while the suite stays fast.
VARIANTS = {
    "dapo-sequence-rtg-batch": _variant(loss_type="dapo", importance_sampling="sequence", advantage="rtg", scale="batch"),
    "dr_grpo-rtg-none": _variant(loss_type="dr_grpo", advantage="rtg", scale="none", gamma=0.9),
    "bnpo-oversample2-batch": _variant(loss_type="bnpo", oversample=2, scale="batch", total=400),
    "kl-refsync-none": _variant(kl_coef=0.1, ref_sync_every=2, ref_mixup_alpha=0.5, scale="none"),
    "pendulum-cliphigher": GRPOConfig(
        env="Pendulum-v1", num_envs=8, num_minibatches=2, update_epochs=1, total_timesteps=200,
        hidden_sizes=(8,), grpo=GRPOOptions(group_size=4, horizon=10, chunk_size=10, clip_eps_high=0.3),
    ),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_train_variants_compile_and_stay_finite(name):
    config = VARIANTS[name]
    out = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    m = jax.tree_util.tree_map(np.asarray, out.metrics)
    n = int(out.state.update)
    assert n >= 1 and int(out.state.env_steps) >= config.total_timesteps
    for field in GRPOMetrics._fields:
        assert np.all(np.isfinite(getattr(m, field)[:n])), f"{name}: {field} not finite"
    np.testing.assert_array_equal(m.env_steps[:n], np.cumsum(m.alive_steps[:n]).astype(np.int64))
    assert np.all(m.episodes[:n] == config.num_envs * config.grpo.oversample)
    for leaf in jax.tree_util.tree_leaves(out.state.params):
        assert np.all(np.isfinite(np.asarray(leaf)))
    if name == "kl-refsync-none":
        assert n >= 2  # the reference was refreshed (mixed) at least once
        assert np.all(m.kl_ref[:n] >= 0) and np.any(m.kl_ref[:n] > 0)
    if name == "pendulum-cliphigher":
        assert np.all(m.alive_steps[:n] == 8 * 10)  # never terminates: horizon-bound
        assert np.all(m.padded_steps[:n] == 0)


# ---- (7) group selection ------------------------------------------------------------------------
def test_keep_widest_groups_picks_largest_spread():
    returns = jnp.array(
        [
            [1.0, 1.0, 1.0, 1.0],  # std 0
            [0.0, 10.0, 0.0, 10.0],  # widest
            [1.0, 2.0, 3.0, 4.0],
            [5.0, 5.0, 5.0, 6.0],
            [0.0, 0.0, 20.0, 20.0],  # wider still
        ]
    )
    keep = np.asarray(keep_widest_groups(returns, 2))
    assert list(keep) == [4, 1]
    assert set(np.asarray(keep_widest_groups(returns, 3))) == {4, 1, 2}
    assert 0 not in set(np.asarray(keep_widest_groups(returns, 4)))


def test_keep_widest_groups_ranks_equal_float_returns_last():
    # Five equal returns of about -1000: the plain float32 std of some such groups is the rounding of their
    # mean (up to about 1e-4), more than the real spread of the last group (about 4e-5).
    values = np.random.default_rng(4).uniform(-1500, -100, size=(200, 1)).astype(np.float32)
    returns = np.concatenate([np.repeat(values, 5, axis=1), [[0.0, 0.0, 0.0, 0.0, 1e-4]]]).astype(np.float32)
    assert np.asarray(group_spread(jnp.asarray(returns[:200]))).max() > np.asarray(group_spread(jnp.asarray(returns[200:])))[0]
    assert list(np.asarray(keep_widest_groups(jnp.asarray(returns), 1))) == [200]


# ---- (8) config validation -----------------------------------------------------------------------
VALID = GRPOConfig(num_envs=8, grpo=GRPOOptions(group_size=4), num_minibatches=2, total_timesteps=600)


def _with(**changes):
    grpo_fields = {f.name for f in dataclasses.fields(GRPOOptions)}
    grpo = {k: v for k, v in changes.items() if k in grpo_fields}
    top = {k: v for k, v in changes.items() if k not in grpo_fields}
    return VALID.replace(grpo=dataclasses.replace(VALID.grpo, **grpo), **top)


def test_valid_config_passes():
    VALID.validate()
    GRPOConfig().validate()


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(group_size=1), "grpo.group_size"),
        (dict(group_size=0), "grpo.group_size"),
        (dict(num_envs=10), "num_envs"),  # not a multiple of group_size 4
        (dict(num_envs=12), "num_minibatches"),  # 3 groups into 2 minibatches
        (dict(clip_eps_high=0.1), "grpo.clip_eps_high"),  # < clip_eps 0.2
        (dict(loss_type="ppo"), "grpo.loss_type"),
        (dict(kl_coef=-0.1), "grpo.kl_coef"),
        (dict(advantage="gae"), "grpo.advantage"),
        (dict(scale="global"), "grpo.scale"),
        (dict(importance_sampling="episode"), "grpo.importance_sampling"),
        (dict(horizon=0), "grpo.horizon"),
        (dict(ref_mixup_alpha=0.0), "grpo.ref_mixup_alpha"),
        (dict(ref_sync_every=-1), "grpo.ref_sync_every"),
        (dict(log_std_init=float("nan")), "log_std_init"),
        (dict(log_std_init=10.0), "log_std_init"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v}" for k, v in v.items()),
)
def test_invalid_config_names_field(changes, field):
    config = _with(**changes)
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.field == field
    assert field in str(info.value)
    with pytest.raises(ConfigError):
        make_train(config)


def test_total_timesteps_leaving_no_room_for_the_last_update_is_refused():
    # 65536 envs x 500 CartPole steps: one update can add 32.8 M alive steps to the int32 count.
    big = GRPOConfig(num_envs=65536, total_timesteps=2**31 - 2**24)
    with pytest.raises(ConfigError) as info:
        big.validate()
    assert info.value.field == "total_timesteps" and "32,768,000" in info.value.message
    big.replace(total_timesteps=2**31 - 1 - 32_768_000).validate()


def test_kl_coef_zero_trains_a_narrow_gaussian_policy_far_from_its_reference():
    """log-std -8: the policy soon moves far from its reference (log ratio > 88 in the k3 KL),
    which gave inf * 0 = NaN and stopped the run after one update before KL_LOG_RATIO_MAX."""
    config = GRPOConfig(env="Pendulum-v1", num_envs=8, total_timesteps=4000, hidden_sizes=(16,), num_minibatches=1,
                        update_epochs=2, log_std_init=-8.0, grpo=GRPOOptions(group_size=4, horizon=20, chunk_size=20))
    metrics = jax.jit(make_train(config))(jax.random.key(0)).metrics
    ran = np.asarray(metrics.env_steps) > 0
    assert ran.sum() == 25 and (np.asarray(metrics.nonfinite)[ran] == 0).all()
    assert np.isfinite(np.asarray(metrics.kl_ref)[ran]).all() and np.asarray(metrics.kl_ref)[ran].max() > 1e3


@pytest.mark.parametrize("field", ["kl_coef", "ref_mixup_alpha", "clip_eps_high"])
def test_nan_grpo_hyperparameters_rejected(field):
    # The base config rejects non-finite traced hyperparameters ("must be a finite number");
    # GRPOOptions' traced ones (and clip_eps_high, which also becomes a traced value) need the same.
    with pytest.raises(ConfigError) as info:
        _with(**{field: math.nan}).validate()
    assert info.value.field == f"grpo.{field}"


# ---- (9) one update against an independent reference ---------------------------------------------
# Everything an update feeds its SGD is switched on and made non-trivial: oversampling (4 of 8
# groups kept), a KL penalty to a reference policy that differs from the policy, obs normalisation
# with statistics far from N(0, 1), lr annealing 40 % into the budget, and a reference refresh
# (update 2 of ref_sync_every 2) with alpha 0.6. One minibatch: the loss is then a mean over the
# kept groups, so the result does not depend on the order top_k stores them in (not what is tested).
REF_CASE = GRPOConfig(
    num_envs=16, num_minibatches=1, update_epochs=2, hidden_sizes=(8,), lr=2e-2, anneal_lr=True,
    normalize_obs=True, total_timesteps=2000,
    grpo=GRPOOptions(group_size=4, oversample=2, horizon=40, chunk_size=10, kl_coef=0.5,
                     ref_sync_every=2, ref_mixup_alpha=0.6),
)
REF_START_ENV_STEPS = 800  # the update's lr is 0.6 x REF_CASE.lr
REF_START_STATS = dict(mean=[0.1, -0.2, 0.05, 0.3], var=[0.04, 0.5, 0.01, 0.8], count=50.0)


@pytest.fixture(scope="module")
def reference_case():
    """One compiled REF_CASE update, its start state (as above) and the rollout it played."""
    config = REF_CASE
    algo = make_algorithm(config)
    update = jax.jit(algo.update)
    fresh = algo.init(jax.random.key(7), {})
    start = fresh._replace(
        update=jnp.int32(config.grpo.ref_sync_every - 1),
        env_steps=jnp.int32(REF_START_ENV_STEPS),
        ref_params=jax.tree_util.tree_map(lambda p: p + 0.5 * jnp.cos(1.7 * jnp.arange(p.size).reshape(p.shape)),
                                          fresh.params),
        obs_stats=RunningMeanStd(**{k: jnp.asarray(v, jnp.float32) for k, v in REF_START_STATS.items()}),
    )
    after, row = update(start, {})
    # The same rollout again: the update's key split, policy and (pre-update) obs statistics.
    opts = config.grpo
    env = make_vec_env(config.env, config.num_envs * opts.oversample)
    policy = policy_for(config, env, with_critic=False)
    _, rollout_key, _ = jax.random.split(start.key, 3)
    episodes, steps_run = jax.jit(lambda key: episode_rollout(
        key, start.params, policy, env, start.obs_stats, opts.group_size, opts.horizon, opts.chunk_size, False
    ))(rollout_key)
    return SimpleNamespace(config=config, update=update, fresh=fresh, start=start, after=after, row=row,
                           policy=policy, episodes=jax.tree_util.tree_map(np.asarray, episodes),
                           steps_run=int(steps_run))


def _outcome_advantage_np(returns: np.ndarray) -> np.ndarray:
    """Returns f[G, K] centred and divided by the group's std (ddof=1); 0 for zero-spread groups."""
    spread = returns.std(1, ddof=1, keepdims=True)
    return np.where(spread < 1e-6, 0.0, (returns - returns.mean(1, keepdims=True)) / (spread + 1e-8))


def _normalize_np(obs: np.ndarray, stats: dict) -> np.ndarray:
    return np.clip((obs - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + 1e-8), -10.0, 10.0)


def _grpo_reference_loss(params, policy, data, kl_coef: float, clip_eps: float):
    """loss_type "grpo": mean over episodes of each one's mean over its alive steps of the clipped
    surrogate plus kl_coef x the k3 estimate of KL(pi || pi_ref) (ent_coef is 0)."""
    log_prob = policy.dist(params, data["obs"]).log_prob(data["action"])
    ratio = jnp.exp(log_prob - data["log_prob"])
    adv = data["advantage"]
    surrogate = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv)
    log_ref_ratio = data["ref_log_prob"] - log_prob
    per_step = (surrogate + kl_coef * (jnp.exp(log_ref_ratio) - log_ref_ratio - 1.0)) * data["mask"]
    return (per_step.sum(-1) / data["mask"].sum(-1)).mean()


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def test_one_update_matches_an_optax_reference(reference_case):
    """The update's new params equal full-batch Adam (optax, annealed lr) on a loss rebuilt from the
    rollout: the groups kept are the widest of all candidates (numpy), their obs normalised with the
    start statistics, advantages recomputed from the kept groups' returns, the KL measured against
    the *reference* params. The reference refresh and the reported lr follow too. Catches a
    mis-selected group (obs or returns taken from other groups), KL against the wrong params,
    annealing left out and a refresh that never happens."""
    case = reference_case
    config, opts, ep, start = case.config, case.config.grpo, case.episodes, case.start
    K, G = opts.group_size, case.config.num_groups
    group = lambda x: grouped(np.swapaxes(x, 0, 1), K)  # [H, B, ...] -> [G * oversample, K, H, ...]
    alive = group(ep.alive).astype(np.float64)
    returns = (group(ep.reward) * alive).sum(-1)
    spread = returns.std(1, ddof=1)
    order = np.argsort(-spread, kind="stable")
    keep = order[:G]
    assert spread[order[G - 1]] > spread[order[G]] + 1e-3, "tied spreads at the cut: pick another seed"
    assert set(keep) != set(range(G)), "the widest groups should not just be the first ones"
    assert not ep.alive[: case.steps_run].all()  # some episodes end early: the mask matters

    obs = _normalize_np(group(ep.obs)[keep], REF_START_STATS).astype(np.float32)
    action = group(ep.action)[keep]
    mask = alive[keep].astype(np.float32)
    advantage = (_outcome_advantage_np(returns[keep])[..., None] * mask).astype(np.float32)
    ref_log_prob = case.policy.dist(start.ref_params, jnp.asarray(obs)).log_prob(jnp.asarray(action))
    assert float(jnp.abs(ref_log_prob - group(ep.log_prob)[keep]).max()) > 0.05  # the reference differs
    data = dict(obs=obs, action=action, log_prob=group(ep.log_prob)[keep], ref_log_prob=ref_log_prob,
                advantage=advantage, mask=mask)

    lr = config.lr * (1.0 - REF_START_ENV_STEPS / config.total_timesteps)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))
    grad = jax.jit(jax.grad(lambda p, d: _grpo_reference_loss(p, case.policy, d, opts.kl_coef, config.clip_eps)))
    params, opt_state = start.params, optimizer.init(start.params)
    for _ in range(config.update_epochs):  # one minibatch: the whole batch per step
        updates, opt_state = optimizer.update(grad(params, data), opt_state, params)
        params = optax.apply_updates(params, updates)

    moved = max(np.abs(a - b).max() for a, b in zip(_leaves(params), _leaves(start.params)))
    assert moved > 1e-2  # a wrong update would show up well above the tolerance below
    for got, want in zip(_leaves(case.after.params), _leaves(params)):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    np.testing.assert_allclose(float(case.row.lr), lr, rtol=1e-6)
    # This update refreshes the reference: ref <- alpha * new params + (1 - alpha) * ref.
    alpha = opts.ref_mixup_alpha
    for got, new, ref in zip(_leaves(case.after.ref_params), _leaves(case.after.params), _leaves(start.ref_params)):
        np.testing.assert_allclose(got, alpha * new + (1 - alpha) * ref, atol=1e-6, rtol=0)


def test_update_merges_obs_statistics_of_alive_steps_only(reference_case):
    """The new obs statistics are the start ones (a prior of ``count`` samples with that mean and
    variance) merged with every alive step's raw obs, by the plain moment formulas in float64;
    padding after an episode's end (and the never-run rows) is left out."""
    case = reference_case
    ep, prior = case.episodes, REF_START_STATS
    alive = ep.alive.reshape(-1)
    assert 0 < alive.sum() < alive.size
    x = ep.obs.reshape(alive.size, -1)[alive].astype(np.float64)
    m0, v0, c0 = np.asarray(prior["mean"]), np.asarray(prior["var"]), prior["count"]
    count = c0 + len(x)
    mean = (c0 * m0 + x.sum(0)) / count
    var = (c0 * (v0 + m0**2) + (x**2).sum(0)) / count - mean**2
    stats = case.after.obs_stats
    np.testing.assert_allclose(float(stats.count), count, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(stats.mean), mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(stats.var), var, rtol=1e-4, atol=1e-6)


def test_reference_refresh_schedule_and_lr_annealing_over_updates(reference_case):
    """Four updates from a fresh state: the reference stays put on updates 1 and 3 and becomes
    alpha * params + (1 - alpha) * previous reference on 2 and 4 (ref_sync_every 2); each update's
    lr is lr x max(0, 1 - env_steps before it / total_timesteps)."""
    case = reference_case
    config, alpha = case.config, case.config.grpo.ref_mixup_alpha
    state = case.fresh
    reference = _leaves(state.params)  # a fresh reference is the initial policy
    lrs, expected_lrs = [], []
    for done in range(1, 5):
        expected_lrs.append(config.lr * max(0.0, 1.0 - int(state.env_steps) / config.total_timesteps))
        state, row = case.update(state, {})
        lrs.append(float(row.lr))
        assert int(state.update) == done and int(state.nonfinite) == 0
        if done % 2 == 0:
            reference = [alpha * p + (1 - alpha) * r for p, r in zip(_leaves(state.params), reference)]
        for got, want in zip(_leaves(state.ref_params), reference):
            np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(lrs, expected_lrs, rtol=1e-6)
    assert expected_lrs[0] == config.lr and expected_lrs[2] < expected_lrs[1] < config.lr  # the schedule bites
