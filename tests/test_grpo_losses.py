"""GRPO loss terms (jaxrl_po.losses): KL k3, GSPO sequence ratio, aggregation, masking, clip-higher."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_po.envs import make_vec_env
from jaxrl_po.losses import (
    GRPOBatch,
    aggregate,
    clipped_surrogate,
    grpo_loss,
    kl_k3,
    sequence_log_ratio,
)
from jaxrl_po.networks import make_policy

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")


def tree_allclose(a, b, atol=1e-7):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=atol)


# ---- KL k3 -------------------------------------------------------------------------
def test_kl_k3_zero_at_equal_log_probs_positive_otherwise_and_formula():
    rng = np.random.default_rng(0)
    log_prob = np.log(rng.uniform(0.05, 1.0, size=(3, 7))).astype(np.float32)
    assert np.all(np.asarray(kl_k3(jnp.asarray(log_prob), jnp.asarray(log_prob))) == 0.0)

    ref = np.log(rng.uniform(0.05, 1.0, size=(3, 7))).astype(np.float32)
    got = np.asarray(kl_k3(jnp.asarray(log_prob), jnp.asarray(ref)))
    ratio = np.exp(ref.astype(np.float64)) / np.exp(log_prob.astype(np.float64))  # pi_ref / pi
    want = ratio - np.log(ratio) - 1.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(got[np.abs(ref - log_prob) > 1e-3] > 0.0)
    # Not symmetric: k3 estimates KL(pi || pi_ref) from samples of pi.
    assert not np.allclose(got, np.asarray(kl_k3(jnp.asarray(ref), jnp.asarray(log_prob))))


def test_kl_k3_is_capped_so_a_far_reference_stays_finite():
    # log(pi_ref / pi) = 200: exp overflows float32 above 88; the cap (20) keeps it finite.
    log_prob, ref = jnp.asarray([-200.0, -1.0]), jnp.asarray([0.0, -1.5])
    got = np.asarray(kl_k3(log_prob, ref))
    np.testing.assert_allclose(got[0], np.expm1(20.0) - 20.0, rtol=1e-6)
    np.testing.assert_allclose(got[1], np.expm1(-0.5) + 0.5, rtol=1e-6)  # below the cap: unchanged
    grad = np.asarray(jax.grad(lambda lp: kl_k3(lp, ref).sum())(log_prob))
    assert np.isfinite(grad).all() and grad[0] == 0.0  # no gradient past the cap


# ---- sequence (GSPO) log-ratio ---------------------------------------------------------------
def test_sequence_log_ratio_is_mean_over_alive_steps_and_ignores_masked_steps():
    rng = np.random.default_rng(1)
    log_ratio = rng.normal(size=(2, 3, 5)).astype(np.float32)
    lengths = np.array([[5, 2, 1], [3, 4, 5]])
    mask = (np.arange(5) < lengths[..., None]).astype(np.float32)
    got = np.asarray(sequence_log_ratio(jnp.asarray(log_ratio), jnp.asarray(mask)))
    assert got.shape == log_ratio.shape
    for g in range(2):
        for k in range(3):
            mean = log_ratio[g, k, : lengths[g, k]].mean()
            np.testing.assert_allclose(got[g, k], mean, rtol=1e-5, atol=1e-6)
            # GSPO's sequence ratio: exp of the mean log-ratio (geometric mean of token ratios).
            np.testing.assert_allclose(
                np.exp(got[g, k]), np.prod(np.exp(log_ratio[g, k, : lengths[g, k]])) ** (1 / lengths[g, k]),
                rtol=1e-5,
            )
    perturbed = np.where(mask > 0, log_ratio, 123.0).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(sequence_log_ratio(jnp.asarray(perturbed), jnp.asarray(mask))), got)


def test_sequence_log_ratio_fully_masked_episode_is_zero():
    got = sequence_log_ratio(jnp.ones((1, 1, 4)), jnp.zeros((1, 1, 4)))
    np.testing.assert_array_equal(np.asarray(got), 0.0)


# ---- aggregation ----------------------------------------------------------------------
PER_STEP = np.array([[[1.0, 2.0, 9.0], [4.0, 9.0, 9.0]]], np.float32)  # [G=1, K=2, H=3]
MASK = np.array([[[1, 1, 0], [1, 0, 0]]], np.float32)
EXPECTED = {
    "grpo": (1.5 + 4.0) / 2,  # mean over episodes of per-episode means = 2.75
    "bnpo": (1 + 2 + 4) / 3,  # / alive steps in this minibatch
    "dapo": (1 + 2 + 4) / 3.5,  # / alive_per_minibatch of the whole update
    "dr_grpo": 7 / (2 * 3),  # / (episodes x horizon)
}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_aggregate_hand_worked(loss_type):
    got = aggregate(jnp.asarray(PER_STEP), jnp.asarray(MASK), loss_type, jnp.float32(3.5))
    np.testing.assert_allclose(float(got), EXPECTED[loss_type], rtol=1e-6)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_aggregate_ignores_values_at_masked_positions(loss_type):
    for fill in (-1e4, 0.0, 1e6):
        per_step = np.where(MASK > 0, PER_STEP, fill).astype(np.float32)
        got = aggregate(jnp.asarray(per_step), jnp.asarray(MASK), loss_type, jnp.float32(3.5))
        np.testing.assert_allclose(float(got), EXPECTED[loss_type], rtol=1e-6)


def test_aggregate_unknown_loss_type_raises():
    with pytest.raises(ValueError, match="loss_type"):
        aggregate(jnp.asarray(PER_STEP), jnp.asarray(MASK), "ppo", jnp.float32(3.5))


# ---- grpo_loss with a tiny discrete policy ------------------------------------------------
G, K, H, D = 2, 3, 4, 4


@pytest.fixture(scope="module")
def setup():
    spec = make_vec_env("CartPole-v1", 4).action_spec
    policy = make_policy(spec, (8,), "tanh", with_critic=False)
    params = policy.init(jax.random.PRNGKey(0), D)
    rng = np.random.default_rng(2)
    obs = jnp.asarray(rng.normal(size=(G, K, H, D)).astype(np.float32))
    action = jnp.asarray(rng.integers(0, spec.num_actions, size=(G, K, H)).astype(np.int32))
    lengths = np.array([[4, 2, 1], [3, 4, 2]])
    mask = jnp.asarray((np.arange(H) < lengths[..., None]).astype(np.float32))
    # Outcome-style advantage: one value per episode, zero after the end.
    advantage = jnp.asarray(rng.normal(size=(G, K, 1)).astype(np.float32)) * mask
    log_prob = policy.dist(params, obs).log_prob(action)
    batch = GRPOBatch(obs=obs, action=action, log_prob=log_prob, ref_log_prob=log_prob, advantage=advantage, mask=mask)
    # Params away from the acting policy, so ratios differ from 1 and clipping binds somewhere.
    noise_keys = jax.random.split(jax.random.PRNGKey(1), len(jax.tree_util.tree_leaves(params)))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    moved = jax.tree_util.tree_unflatten(
        treedef, [p + 0.5 * jax.random.normal(k, p.shape) for p, k in zip(leaves, noise_keys)]
    )
    return policy, params, moved, batch


def hparams(kl_coef=0.0, ent_coef=0.0, eps=0.2, eps_high=0.2):
    return {
        "clip_eps": jnp.float32(eps),
        "clip_eps_high": jnp.float32(eps_high),
        "kl_coef": jnp.float32(kl_coef),
        "ent_coef": jnp.float32(ent_coef),
    }


def loss_and_grad(policy, params, batch, hp, loss_type, importance_sampling, apm=jnp.float32(5.0)):
    fn = lambda p: grpo_loss(p, policy, batch, hp, loss_type, importance_sampling, apm)
    (loss, info), grads = jax.value_and_grad(fn, has_aux=True)(params)
    return loss, info, grads


@pytest.mark.parametrize("importance_sampling", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_grpo_loss_at_acting_policy(setup, loss_type, importance_sampling):
    policy, params, _, batch = setup
    apm = jnp.float32(5.0)
    loss, info, _ = loss_and_grad(policy, params, batch, hparams(kl_coef=0.3), loss_type, importance_sampling, apm)
    # ratio 1: the surrogate is -A on every step, the k3 KL to an identical reference is 0.
    want = -float(aggregate(batch.advantage, batch.mask, loss_type, apm))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(info.policy_loss), want, rtol=1e-5, atol=1e-6)
    assert float(info.kl_ref) == 0.0
    assert abs(float(info.approx_kl)) < 1e-6
    assert float(info.clip_frac_low) == 0.0 and float(info.clip_frac_high) == 0.0
    assert float(info.entropy) > 0.0


def test_grpo_loss_entropy_bonus(setup):
    policy, params, _, batch = setup
    apm = jnp.float32(5.0)
    loss, _, _ = loss_and_grad(policy, params, batch, hparams(ent_coef=0.1), "bnpo", "token", apm)
    entropy = policy.dist(params, batch.obs).entropy()
    want = -aggregate(batch.advantage, batch.mask, "bnpo", apm) - 0.1 * aggregate(entropy, batch.mask, "bnpo", apm)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)


def test_token_and_sequence_sampling_agree_at_ratio_one(setup):
    policy, params, _, batch = setup
    hp = hparams()
    for loss_type in LOSS_TYPES:
        tok, _, g_tok = loss_and_grad(policy, params, batch, hp, loss_type, "token")
        seq, _, g_seq = loss_and_grad(policy, params, batch, hp, loss_type, "sequence")
        np.testing.assert_allclose(float(tok), float(seq), rtol=1e-6, atol=1e-7)
        if loss_type == "grpo":
            # With a per-episode-constant advantage and per-episode means, the gradients agree too:
            # mean_t A grad log pi_t  ==  A grad (mean_t log pi_t).
            tree_allclose(g_tok, g_seq, atol=1e-6)


@pytest.mark.parametrize("importance_sampling", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_masked_steps_change_neither_loss_nor_gradients(setup, loss_type, importance_sampling):
    policy, _, moved, batch = setup
    hp = hparams(kl_coef=0.1, ent_coef=0.01)
    ref_log_prob = batch.log_prob - 0.3  # non-zero KL term as well
    batch = batch._replace(ref_log_prob=ref_log_prob)
    loss, info, grads = loss_and_grad(policy, moved, batch, hp, loss_type, importance_sampling)
    dead = batch.mask == 0
    assert bool(dead.any())
    rng = np.random.default_rng(3)
    perturbed = GRPOBatch(
        obs=jnp.where(dead[..., None], jnp.asarray(rng.normal(0, 50, size=batch.obs.shape), jnp.float32), batch.obs),
        action=jnp.where(dead, 1 - batch.action, batch.action),
        log_prob=jnp.where(dead, -20.0, batch.log_prob),
        ref_log_prob=jnp.where(dead, 5.0, batch.ref_log_prob),
        advantage=jnp.where(dead, 1e3, batch.advantage),
        mask=batch.mask,
    )
    loss2, info2, grads2 = loss_and_grad(policy, moved, perturbed, hp, loss_type, importance_sampling)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6, atol=1e-7)
    tree_allclose(info2, info)
    tree_allclose(grads2, grads)
    # ... while the loss does depend on the alive steps.
    alive_changed = batch._replace(advantage=jnp.where(dead, batch.advantage, batch.advantage + 1.0))
    loss3, _, _ = loss_and_grad(policy, moved, alive_changed, hp, loss_type, importance_sampling)
    assert abs(float(loss3) - float(loss)) > 1e-3


def grpo_loss_by_hand(new_lp, batch, loss_type, sequence, eps_low, eps_high, kl_coef, apm):
    """The clipped surrogate plus k3 KL, aggregated, one episode at a time in plain NumPy."""
    old_lp, ref_lp, adv, mask = (np.asarray(x, np.float64) for x in (batch.log_prob, batch.ref_log_prob,
                                                                      batch.advantage, batch.mask))
    new_lp = np.asarray(new_lp, np.float64)
    groups, members, horizon = mask.shape
    sums, counts = [], []
    for g in range(groups):
        for k in range(members):
            alive = mask[g, k] > 0
            log_ratio = new_lp[g, k] - old_lp[g, k]
            if sequence:  # GSPO: one ratio per episode, the geometric mean of its steps' ratios
                log_ratio = np.full(horizon, log_ratio[alive].mean())
            ratio, a = np.exp(log_ratio), adv[g, k]
            surrogate = -np.minimum(ratio * a, np.clip(ratio, 1 - eps_low, 1 + eps_high) * a)
            log_r = ref_lp[g, k] - new_lp[g, k]
            kl = np.exp(log_r) - log_r - 1
            sums.append((surrogate + kl_coef * kl)[alive].sum())
            counts.append(alive.sum())
    sums, counts = np.asarray(sums), np.asarray(counts)
    return {"grpo": np.mean(sums / counts), "bnpo": sums.sum() / counts.sum(), "dapo": sums.sum() / apm,
            "dr_grpo": sums.sum() / (groups * members * horizon)}[loss_type]


@pytest.mark.parametrize("importance_sampling", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_grpo_loss_away_from_the_acting_policy_matches_a_hand_loop(setup, loss_type, importance_sampling):
    policy, _, moved, batch = setup
    hp = hparams(kl_coef=0.3, eps=0.2, eps_high=0.28)
    loss, _, _ = loss_and_grad(policy, moved, batch, hp, loss_type, importance_sampling, jnp.float32(5.0))
    new_lp = policy.dist(moved, batch.obs).log_prob(batch.action)
    ratio = np.exp(np.asarray(new_lp - batch.log_prob))[np.asarray(batch.mask) > 0]
    assert (ratio < 0.8).any() and (ratio > 1.28).any()  # both clip edges are in play
    want = grpo_loss_by_hand(new_lp, batch, loss_type, importance_sampling == "sequence", 0.2, 0.28, 0.3, 5.0)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)


# ---- clip-higher --------------------------------------------------------------------------
def test_clip_higher_raises_only_the_upper_clip():
    up = jnp.log(jnp.float32(1.25))
    # ratio 1.25, A = +1: symmetric clip at 1 + eps_low = 1.2; eps_high = 0.3 leaves it unclipped.
    np.testing.assert_allclose(float(clipped_surrogate(up, jnp.float32(1.0), 0.2, 0.2)), -1.2, rtol=1e-6)
    np.testing.assert_allclose(float(clipped_surrogate(up, jnp.float32(1.0), 0.2, 0.3)), -1.25, rtol=1e-6)
    # ratio 1.4 is clipped at 1.3 with eps_high = 0.3.
    np.testing.assert_allclose(
        float(clipped_surrogate(jnp.log(jnp.float32(1.4)), jnp.float32(1.0), 0.2, 0.3)), -1.3, rtol=1e-6
    )
    # The lower clip stays at 1 - eps_low: ratio 0.75, A = -1 -> -min(-0.75, -0.8) = 0.8 either way.
    down = jnp.log(jnp.float32(0.75))
    for eps_high in (0.2, 0.3):
        np.testing.assert_allclose(float(clipped_surrogate(down, jnp.float32(-1.0), 0.2, eps_high)), 0.8, rtol=1e-6)
    # Pessimistic side is never clipped: ratio 1.25 with A < 0 keeps the full penalty.
    np.testing.assert_allclose(float(clipped_surrogate(up, jnp.float32(-1.0), 0.2, 0.2)), 1.25, rtol=1e-6)


def test_clip_fractions_in_grpo_loss(setup):
    policy, params, _, batch = setup
    shift = jnp.log(jnp.float32(1.25))
    positive = batch._replace(log_prob=batch.log_prob - shift, advantage=jnp.abs(batch.advantage) + 0.1)
    _, info, _ = loss_and_grad(policy, params, positive, hparams(eps_high=0.2), "grpo", "token")
    np.testing.assert_allclose(float(info.clip_frac_high), 1.0, rtol=1e-6)
    assert float(info.clip_frac_low) == 0.0
    _, info, _ = loss_and_grad(policy, params, positive, hparams(eps_high=0.3), "grpo", "token")
    assert float(info.clip_frac_high) == 0.0
    # ratio 1 / 1.3 < 1 - eps_low with A < 0: the low side binds whatever eps_high is.
    negative = batch._replace(log_prob=batch.log_prob + jnp.log(jnp.float32(1.3)), advantage=-jnp.abs(batch.advantage) - 0.1)
    _, info, _ = loss_and_grad(policy, params, negative, hparams(eps_high=0.3), "grpo", "token")
    np.testing.assert_allclose(float(info.clip_frac_low), 1.0, rtol=1e-6)
    assert float(info.clip_frac_high) == 0.0
