"""Group-relative advantages of GRPO (jaxrl_po.advantages), checked against plain numpy/python."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_po.advantages import (
    ZERO_SPREAD,
    carries_no_signal,
    group_spread,
    outcome_advantage,
    return_to_go,
    rtg_advantage,
)

SCALES = ("group", "batch", "none")
EPS = 1e-8  # the package default


# ---- references ------------------------------------------------------------------
def outcome_reference(returns: np.ndarray, scale: str) -> np.ndarray:
    returns = np.asarray(returns, np.float64)
    centred = returns - returns.mean(axis=1, keepdims=True)
    spread = returns.std(axis=1, ddof=1, keepdims=True)
    if scale == "group":
        adv = centred / (spread + EPS)
    elif scale == "batch":
        adv = centred / (centred.std() + EPS)
    else:
        adv = centred.copy()
    adv[np.broadcast_to(spread < ZERO_SPREAD, adv.shape)] = 0.0
    return adv


def rtg_loop(reward: np.ndarray, gamma: float) -> np.ndarray:
    reward = np.asarray(reward, np.float64)
    out = np.zeros_like(reward)
    for idx in np.ndindex(reward.shape[:-1]):
        acc = 0.0
        for t in reversed(range(reward.shape[-1])):
            acc = reward[idx + (t,)] + gamma * acc
            out[idx + (t,)] = acc
    return out


def rtg_advantage_reference(reward, alive, gamma, scale):
    reward = np.asarray(reward, np.float64)
    alive = np.asarray(alive, np.float64)
    G, K, H = reward.shape
    rtg = rtg_loop(reward * alive, gamma)  # a finished member contributes 0
    adv = np.zeros_like(reward)
    for g in range(G):
        for i in range(K):
            for t in range(H):
                if alive[g, i, t]:
                    others = [rtg[g, j, t] for j in range(K) if j != i]
                    adv[g, i, t] = rtg[g, i, t] - np.mean(others)
    episode_returns = (reward * alive).sum(-1)
    for g in range(G):  # no signal: 0, which the batch RMS counts
        if episode_returns[g].std(ddof=1) < ZERO_SPREAD:
            adv[g] = 0.0
    if scale == "group":
        for g in range(G):
            rms = np.sqrt((adv[g] ** 2).sum() / max(alive[g].sum(), 1.0))
            adv[g] /= rms + EPS
    elif scale == "batch":
        rms = np.sqrt((adv**2).sum() / max(alive.sum(), 1.0))
        adv /= rms + EPS
    return adv


def prefix_alive(rng: np.random.Generator, shape, min_len: int = 1) -> np.ndarray:
    """bool[G, K, H]: each member alive for a random prefix of 1..H steps."""
    *lead, H = shape
    lengths = rng.integers(min_len, H + 1, size=lead)
    return np.arange(H) < lengths[..., None]


# ---- outcome advantage ---------------------------------------------------------------
@pytest.mark.parametrize("scale", SCALES)
def test_outcome_advantage_matches_reference(scale):
    returns = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 5)).astype(np.float32)
    got = np.asarray(outcome_advantage(jnp.asarray(returns), scale))
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, outcome_reference(returns, scale), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_outcome_advantage_zero_mean_within_each_group(scale):
    returns = np.random.default_rng(1).uniform(0, 100, size=(4, 5)).astype(np.float32)
    got = np.asarray(outcome_advantage(jnp.asarray(returns), scale))
    np.testing.assert_allclose(got.mean(axis=1), 0.0, atol=1e-4)
    assert np.all(np.abs(got).sum(axis=1) > 0)


@pytest.mark.parametrize("scale", SCALES)
def test_constant_group_gets_exactly_zero_and_others_unaffected(scale):
    rng = np.random.default_rng(2)
    returns = rng.normal(size=(4, 5)).astype(np.float32)
    returns[1] = 7.0  # e.g. every member balanced the pole for the whole horizon
    got = np.asarray(outcome_advantage(jnp.asarray(returns), scale))
    assert np.all(got[1] == 0.0)  # exactly zero, no 0/eps blow-up
    others = [0, 2, 3]
    np.testing.assert_allclose(got[others], outcome_reference(returns, scale)[others], rtol=1e-5, atol=1e-5)
    if scale != "batch":
        # Per-group scaling: the other groups do not depend on the constant group at all.
        alone = np.asarray(outcome_advantage(jnp.asarray(returns[others]), scale))
        np.testing.assert_allclose(got[others], alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scale", SCALES)
def test_tiny_spread_counts_as_zero_spread(scale):
    # Float noise far below ZERO_SPREAD must not be blown up to +-1 by the group std.
    returns = jnp.array([[1.0, 1.0, 1.0, 1.0 + 2e-7], [0.0, 1.0, 2.0, 3.0]], jnp.float32)
    got = np.asarray(outcome_advantage(returns, scale))
    assert np.all(got[0] == 0.0)
    assert np.all(got[1] != 0.0)


@pytest.mark.parametrize("group_size", [3, 5, 6, 7, 8])
def test_equal_large_returns_count_as_zero_spread(group_size):
    # K equal returns such as -1234.5: their float32 mean is rounded, so a plain std is about
    # 1e-4, above ZERO_SPREAD; the groups used to get advantages of up to +-0.9 from that noise.
    values = np.random.default_rng(4).uniform(-1500, -100, size=(200, 1)).astype(np.float32)
    returns = np.repeat(values, group_size, axis=1)
    assert np.asarray(carries_no_signal(jnp.asarray(returns))).all()
    for scale in SCALES:
        assert np.all(np.asarray(outcome_advantage(jnp.asarray(returns), scale)) == 0.0), scale
    # rtg: every member earns the same float rewards, so their episode returns agree too.
    reward = np.repeat(np.random.default_rng(5).uniform(-30, -5, size=(200, 1, 3)).astype(np.float32), group_size, 1)
    alive = np.ones(reward.shape, bool)
    for scale in SCALES:
        assert np.all(np.asarray(rtg_advantage(jnp.asarray(reward), jnp.asarray(alive), 1.0, scale)) == 0.0), scale


def test_outcome_advantage_hand_worked():
    returns = jnp.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    # Group 0: mean 2, std(ddof=1) = 1 -> [-1, 0, 1]; group 1: mean 4, std 2 -> [-1, 0, 1].
    np.testing.assert_allclose(outcome_advantage(returns, "group"), [[-1, 0, 1], [-1, 0, 1]], atol=1e-6)
    np.testing.assert_allclose(outcome_advantage(returns, "none"), [[-1, 0, 1], [-2, 0, 2]], atol=1e-6)
    # Batch: centred = [-1, 0, 1, -2, 0, 2], population std = sqrt(10 / 6).
    s = np.sqrt(10.0 / 6.0)
    np.testing.assert_allclose(
        outcome_advantage(returns, "batch"), [[-1 / s, 0, 1 / s], [-2 / s, 0, 2 / s]], rtol=1e-6
    )
    np.testing.assert_allclose(group_spread(returns), [1.0, 2.0], rtol=1e-6)


# ---- return to go ----------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_return_to_go_matches_python_loop(gamma):
    reward = np.random.default_rng(3).normal(size=(2, 3, 7)).astype(np.float32)
    got = np.asarray(return_to_go(jnp.asarray(reward), gamma))
    np.testing.assert_allclose(got, rtg_loop(reward, gamma), rtol=1e-5, atol=1e-5)


def test_return_to_go_hand_worked():
    got = return_to_go(jnp.array([1.0, 2.0, 3.0]), 0.9)
    np.testing.assert_allclose(got, [1 + 0.9 * 2 + 0.81 * 3, 2 + 0.9 * 3, 3.0], rtol=1e-6)


# ---- rtg advantage ----------------------------------------------------------------------
def test_rtg_advantage_leave_one_out_hand_worked():
    # G=1, K=3, H=3; member 1 dies after its first step (reward 0 and alive 0 afterwards).
    reward = jnp.array([[[1.0, 2.0, 3.0], [2.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
    alive = jnp.array([[[1, 1, 1], [1, 0, 0], [1, 1, 1]]], bool)
    # gamma = 1 returns-to-go: m0 [6, 5, 3], m1 [2, 0, 0], m2 [2, 2, 1].
    # adv_i,t = G_i,t - mean_{j != i} G_j,t on alive steps, 0 elsewhere:
    expected = [
        [6 - (2 + 2) / 2, 5 - (0 + 2) / 2, 3 - (0 + 1) / 2],
        [2 - (6 + 2) / 2, 0.0, 0.0],
        [2 - (6 + 2) / 2, 2 - (5 + 0) / 2, 1 - (3 + 0) / 2],
    ]
    got = rtg_advantage(reward, alive, 1.0, "none")
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
    # A float mask (as grpo.py passes) gives the same.
    np.testing.assert_allclose(rtg_advantage(reward, alive.astype(jnp.float32), 1.0, "none"), got)
    # Rewards recorded after a member's end (padding) never matter.
    garbage = reward.at[0, 1, 1:].set(jnp.array([50.0, -7.0]))
    np.testing.assert_allclose(rtg_advantage(garbage, alive, 1.0, "none"), got)


@pytest.mark.parametrize("scale", SCALES)
def test_rtg_advantage_matches_reference(scale):
    rng = np.random.default_rng(4)
    shape = (3, 4, 7)
    reward = rng.normal(size=shape).astype(np.float32)  # also non-zero after each end
    alive = prefix_alive(rng, shape)
    got = np.asarray(rtg_advantage(jnp.asarray(reward), jnp.asarray(alive), 0.9, scale))
    want = rtg_advantage_reference(reward, alive, 0.9, scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.all(got[~alive] == 0.0)
    if scale == "group":  # RMS of each group's alive values is 1
        for g in range(shape[0]):
            np.testing.assert_allclose(np.sqrt((got[g] ** 2).sum() / alive[g].sum()), 1.0, rtol=1e-4)
    if scale == "batch":
        np.testing.assert_allclose(np.sqrt((got**2).sum() / alive.sum()), 1.0, rtol=1e-4)


@pytest.mark.parametrize("scale", SCALES)
def test_rtg_advantage_zero_spread_groups_get_zero(scale):
    # Note: with a constant per-step reward (CartPole's +1) any per-step reward
    # normalisation is degenerate (every reward equals the mean, std 0); only the
    # episode length carries signal, so members of equal length give zero advantage.
    reward = np.zeros((3, 3, 4), np.float32)
    alive = np.ones((3, 3, 4), bool)
    reward[0] = 1.0  # group 0: CartPole-like, every member alive all 4 steps -> equal returns
    reward[1] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]  # group 1: equal returns, different timing
    reward[2] = 1.0  # group 2: different lengths -> real spread
    alive[2] = np.arange(4) < np.array([[4], [2], [1]])
    got = np.asarray(rtg_advantage(jnp.asarray(reward), jnp.asarray(alive), 0.9, scale))
    assert np.all(got[0] == 0.0)
    assert np.all(got[1] == 0.0)
    assert np.all(got[2][alive[2]] != 0.0)
    assert np.all(got[2][~alive[2]] == 0.0)
    np.testing.assert_allclose(got, rtg_advantage_reference(reward, alive, 0.9, scale), rtol=1e-5, atol=1e-6)
