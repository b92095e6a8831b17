"""GAE (jaxrl_po.advantages.gae): reference implementation and hand-worked cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_po.advantages import gae


def gae_reference(reward, value, next_value, terminated, truncated, gamma, lam):
    """GAE written from the definition with plain Python loops over envs and time.

    delta_t = r_t + gamma * (1 - terminated_t) * nextV_t - V_t
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},  done = terminated or truncated
    where nextV_t is V of the observation step t reached (before any auto-reset).
    """
    T, B = len(reward), len(reward[0])
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        next_adv = 0.0
        for t in reversed(range(T)):
            term = bool(terminated[t][b])
            done = term or bool(truncated[t][b])
            bootstrap = 0.0 if term else float(next_value[t][b])
            delta = float(reward[t][b]) + gamma * bootstrap - float(value[t][b])
            next_adv = delta + (0.0 if done else gamma * lam * next_adv)
            adv[t][b] = next_adv
    adv = np.array(adv)
    return adv, adv + np.asarray(value, np.float64)


# gamma and lambda are traced, as inside the trainer: one compile per input shape.
_gae = jax.jit(gae)


def _call(reward, value, next_value, terminated, done, gamma, lam):
    adv, target = _gae(
        jnp.asarray(reward, jnp.float32), jnp.asarray(value, jnp.float32),
        jnp.asarray(next_value, jnp.float32), jnp.asarray(terminated, bool),
        jnp.asarray(done, bool), jnp.float32(gamma), jnp.float32(lam),
    )
    return np.asarray(adv), np.asarray(target)


def _random_rewards_and_values(rng, T, B):
    """(reward, value, next_value), each f32[T, B] of standard normals."""
    return tuple(rng.normal(size=(T, B)).astype(np.float32) for _ in range(3))


def test_gae_matches_reference_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    T, B = 17, 5
    reward, value, next_value = _random_rewards_and_values(rng, T, B)
    u = rng.uniform(size=(T, B))
    terminated = u < 0.15
    truncated = (u >= 0.15) & (u < 0.3)
    # Make sure the data really contains both kinds of episode end (and non-ends).
    terminated[3, 0] = True
    truncated[3, 0] = False
    truncated[5, 1], terminated[5, 1] = True, False
    assert terminated.any() and truncated.any() and (~(terminated | truncated)).any()
    done = terminated | truncated

    for gamma, lam in [(0.99, 0.95), (0.9, 0.5), (0.7, 1.0)]:
        adv, target = _call(reward, value, next_value, terminated, done, gamma, lam)
        ref_adv, ref_target = gae_reference(reward, value, next_value, terminated, truncated, gamma, lam)
        assert adv.shape == target.shape == (T, B)
        np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(target, ref_target, rtol=1e-5, atol=1e-5)


# One env, three steps, reward 1 every step, V(s_0..s_2) = 2, 4, 1, gamma = 0.5, lambda = 1.
# next_value[t] is V of the observation step t reached:
#   t=0 reached s_1          -> V = 4
#   t=1 reached a final obs  -> V = 6 (the bootstrap if step 1 is truncated)
#   t=2 reached s_3          -> V = 2 (rollout ends mid-episode: bootstrap)
REWARD = [[1.0], [1.0], [1.0]]
VALUE = [[2.0], [4.0], [1.0]]
NEXT_VALUE = [[4.0], [6.0], [2.0]]
ENDS_AT_1 = [[False], [True], [False]]
NO_END = [[False], [False], [False]]


def test_gae_truncation_bootstraps_from_final_obs_value_and_cuts_trace():
    # Step 1 truncated: done, not terminated.
    #   delta_2 = 1 + 0.5*2 - 1 = 1                  A_2 = 1
    #   delta_1 = 1 + 0.5*6 - 4 = 0                  A_1 = 0 + 0.5*1*(1-done_1)*A_2 = 0
    #   delta_0 = 1 + 0.5*4 - 2 = 1                  A_0 = 1 + 0.5*1*1*A_1 = 1
    # targets = A + V = 3, 4, 2; e.g. target_0 = 1 + 0.5*1 + 0.25*6 = 3 (bootstrap from V(final) = 6),
    # target_1 = 1 + 0.5*6 = 4, target_2 = 1 + 0.5*2 = 2.
    adv, target = _call(REWARD, VALUE, NEXT_VALUE, NO_END, ENDS_AT_1, 0.5, 1.0)
    np.testing.assert_array_equal(adv[:, 0], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(target[:, 0], [3.0, 4.0, 2.0])


def test_gae_termination_does_not_bootstrap():
    # Step 1 terminated (and so done):
    #   delta_2 = 1 + 0.5*2 - 1 = 1                  A_2 = 1
    #   delta_1 = 1 + 0 - 4 = -3                     A_1 = -3 (trace cut)
    #   delta_0 = 1 + 0.5*4 - 2 = 1                  A_0 = 1 + 0.5*(-3) = -0.5
    # targets = 1.5, 1, 2: target_0 = 1 + 0.5*1 (the episode ends after two rewards).
    adv, target = _call(REWARD, VALUE, NEXT_VALUE, ENDS_AT_1, ENDS_AT_1, 0.5, 1.0)
    np.testing.assert_array_equal(adv[:, 0], [-0.5, -3.0, 1.0])
    np.testing.assert_array_equal(target[:, 0], [1.5, 1.0, 2.0])
    # The value of the terminal observation is ignored entirely.
    other_next = [[4.0], [1000.0], [2.0]]
    adv2, target2 = _call(REWARD, VALUE, other_next, ENDS_AT_1, ENDS_AT_1, 0.5, 1.0)
    np.testing.assert_array_equal(adv2, adv)
    np.testing.assert_array_equal(target2, target)


def test_gae_no_episode_end_is_full_lambda_return():
    # Same deltas as the truncated case (1, 0, 1), but the trace is never cut:
    #   A_2 = 1, A_1 = 0 + 0.5*A_2 = 0.5, A_0 = 1 + 0.5*A_1 = 1.25; targets = A + V = 3.25, 4.5, 2.
    adv, target = _call(REWARD, VALUE, NEXT_VALUE, NO_END, NO_END, 0.5, 1.0)
    np.testing.assert_array_equal(adv[:, 0], [1.25, 0.5, 1.0])
    np.testing.assert_array_equal(target[:, 0], [3.25, 4.5, 2.0])


def test_gae_lambda_zero_is_one_step_td_error():
    rng = np.random.default_rng(1)
    T, B = 9, 3
    reward, value, next_value = _random_rewards_and_values(rng, T, B)
    terminated = rng.uniform(size=(T, B)) < 0.2
    done = terminated | (rng.uniform(size=(T, B)) < 0.2)
    gamma = 0.9
    adv, target = _call(reward, value, next_value, terminated, done, gamma, 0.0)
    td = reward + gamma * (1.0 - terminated) * next_value - value
    np.testing.assert_allclose(adv, td, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(target, reward + gamma * (1.0 - terminated) * next_value, rtol=1e-6, atol=1e-6)
