"""jaxrl_po.update: shuffled minibatch orders, and gradients summed over pieces of a minibatch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_po.envs import ActionSpec
from jaxrl_po.losses import PPOBatch, ppo_loss
from jaxrl_po.networks import make_policy
from jaxrl_po import make_train
from jaxrl_po.update import grad_in_pieces, pieces_for, random_permutation


HP = {"clip_eps": jnp.float32(0.2), "vf_coef": jnp.float32(0.5), "ent_coef": jnp.float32(0.01)}


@pytest.mark.parametrize("n", [1, 2, 3, 512, 1000, 262144])
def test_random_permutation_is_a_permutation_and_reproducible(n):
    order = jax.jit(random_permutation, static_argnums=1)(jax.random.key(3), n)
    assert order.dtype == jnp.int32 and order.shape == (n,)
    np.testing.assert_array_equal(np.sort(np.asarray(order)), np.arange(n))
    np.testing.assert_array_equal(order, jax.jit(random_permutation, static_argnums=1)(jax.random.key(3), n))
    if n >= 512:  # another key, another order
        assert (np.asarray(order) != np.asarray(random_permutation(jax.random.key(4), n))).mean() > 0.9


def test_random_permutation_is_uniform():
    """All 24 orders of 4 items equally likely (chi-square over 48,000 draws), and each item equally likely everywhere."""
    draws = 48_000
    orders = np.asarray(jax.jit(jax.vmap(lambda k: random_permutation(k, 4)))(jax.random.split(jax.random.key(0), draws)))
    codes = orders @ np.array([64, 16, 4, 1])
    counts = np.array([np.sum(codes == c) for c in np.unique(codes)])
    assert len(counts) == 24
    expected = draws / 24
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 49.7, chi2  # the 0.999 quantile of chi-square with 23 degrees of freedom
    position_counts = np.stack([(orders == item).sum(axis=0) for item in range(4)])
    np.testing.assert_allclose(position_counts / draws, 0.25, atol=0.01)


def test_random_permutation_of_more_than_2_to_the_24_items_is_jax_s():
    """Past 2**24 items the packed keys would have too few random bits: jax.random.permutation takes over."""
    n = 2**24 + 1
    ours = jax.make_jaxpr(lambda k: random_permutation(k, n))(jax.random.key(0))
    assert str(ours) == str(jax.make_jaxpr(lambda k: jax.random.permutation(k, n))(jax.random.key(0)))
    assert ours.out_avals[0].shape == (n,) and ours.out_avals[0].dtype == jnp.int32


@pytest.mark.parametrize("samples, piece_size, pieces", [
    (128, 1024, 1),      # already small enough
    (65536, 1024, 64),   # 64 pieces of 1024
    (3000, 1024, 3),     # the fewest even split: 3 x 1000
    (1031, 1024, 1),     # prime: only pieces of 1 would divide it, so no split
    (4096, 0, 1),        # 0: off
])
def test_pieces_for(samples, piece_size, pieces):
    assert pieces_for(samples, piece_size) == pieces


@pytest.mark.parametrize("discrete", [True, False])
def test_grad_in_pieces_matches_the_whole_batch_gradient(discrete):
    spec = ActionSpec(discrete=True, num_actions=3) if discrete else ActionSpec(
        discrete=False, shape=(2,), low=-np.ones(2, np.float32), high=np.ones(2, np.float32))
    policy = make_policy(spec, (16,), "tanh")
    loss_fn = lambda p, b: ppo_loss(p, policy, b, HP, True)

    @jax.jit
    def both(key):
        k = jax.random.split(key, 6)
        params = policy.init(k[0], 4)
        obs = jax.random.normal(k[1], (64, 4))
        action, log_prob = policy.dist(params, obs).sample_and_log_prob(seed=k[2])
        batch = PPOBatch(obs, action, log_prob - 0.3 * jax.random.normal(k[3], (64,)),  # off-policy: some clipping
                         policy.value(params, obs), jax.random.normal(k[4], (64,)), jax.random.normal(k[5], (64,)))
        return jax.grad(loss_fn, has_aux=True)(params, batch), grad_in_pieces(loss_fn, 4)(params, batch)

    whole, pieces = both(jax.random.key(0))
    assert whole[1].clip_frac > 0  # the clipped branch is exercised
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(pieces)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=1e-7)


def test_ppo_with_gradient_pieces_trains_like_whole_minibatches(make_tiny_ppo_config):
    # Minibatches of 16 samples in 4 pieces of 4, against whole minibatches: same metrics up to float rounding.
    whole, pieces = (jax.jit(make_train(make_tiny_ppo_config(grad_piece_size=size)))(jax.random.key(3))
                     for size in (0, 4))
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm", "episode_return"):
        np.testing.assert_allclose(getattr(pieces.metrics, name)[:3], getattr(whole.metrics, name)[:3],
                                   rtol=1e-4, atol=1e-6, err_msg=name)
