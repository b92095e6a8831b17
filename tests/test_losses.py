"""PPO loss terms (jaxrl_po.losses): hand-derived values and a tiny end-to-end ppo_loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_po.envs import ActionSpec
from jaxrl_po.losses import PPOBatch, approx_kl, clipped_surrogate, normalize, ppo_loss, value_loss
from jaxrl_po.networks import make_policy

EPS = 0.2


def surrogate(ratio, advantage, eps_low=EPS, eps_high=EPS):
    out = clipped_surrogate(
        jnp.log(jnp.asarray(ratio, jnp.float32)), jnp.asarray(advantage, jnp.float32),
        jnp.float32(eps_low), jnp.float32(eps_high),
    )
    return np.asarray(out)


# loss = -min(r*A, clip(r, 1-eps, 1+eps)*A), eps = 0.2 (clip range [0.8, 1.2])
SURROGATE_CASES = [
    # ratio, A, expected loss, derivation
    (1.0, 2.0, -2.0),   # r = 1: -A
    (1.0, -3.0, 3.0),   # r = 1: -A
    (1.2, 1.0, -1.2),   # at the upper edge: r*A = clip*A = 1.2
    (0.8, -1.0, 0.8),   # at the lower edge: r*A = clip*A = -0.8
    (1.5, 2.0, -2.4),   # r*A = 3.0, clip*A = 1.2*2 = 2.4, min = 2.4
    (1.5, -1.0, 1.5),   # r*A = -1.5, clip*A = -1.2, min = -1.5 (pessimistic: no clipping)
    (0.5, -1.0, 0.8),   # r*A = -0.5, clip*A = 0.8*-1 = -0.8, min = -0.8
    (0.5, 2.0, -1.0),   # r*A = 1.0, clip*A = 1.6, min = 1.0 (pessimistic: no clipping)
    (0.9, 3.0, -2.7),   # inside the range: r*A
]


@pytest.mark.parametrize("ratio, advantage, expected", SURROGATE_CASES)
def test_clipped_surrogate_hand_values(ratio, advantage, expected):
    np.testing.assert_allclose(surrogate([ratio], [advantage]), [expected], rtol=1e-6, atol=1e-6)


def test_clipped_surrogate_vectorised_and_asymmetric():
    ratios = [c[0] for c in SURROGATE_CASES]
    advs = [c[1] for c in SURROGATE_CASES]
    np.testing.assert_allclose(surrogate(ratios, advs), [c[2] for c in SURROGATE_CASES], rtol=1e-6, atol=1e-6)
    # Clip-higher (eps_low 0.2, eps_high 0.28): r = 1.5, A = 1 -> -min(1.5, 1.28) = -1.28;
    # r = 0.5, A = -1 -> -min(-0.5, -0.8) = 0.8 (the low side still uses 0.2).
    np.testing.assert_allclose(
        surrogate([1.5, 0.5], [1.0, -1.0], eps_low=0.2, eps_high=0.28), [-1.28, 0.8], rtol=1e-6
    )


def test_clipped_surrogate_gradient_vanishes_where_clipped():
    def loss(log_ratio, advantage):
        return clipped_surrogate(log_ratio, advantage, jnp.float32(EPS), jnp.float32(EPS)).sum()

    log_ratio = jnp.log(jnp.array([1.5, 0.5, 1.5, 0.5, 1.0], jnp.float32))
    advantage = jnp.array([2.0, -1.0, -1.0, 2.0, 3.0], jnp.float32)
    grad = np.asarray(jax.grad(loss)(log_ratio, advantage))
    # Clipped (r > 1+eps with A > 0, r < 1-eps with A < 0): no gradient.
    assert grad[0] == 0.0 and grad[1] == 0.0
    # Unclipped: d(-r*A)/d(log r) = -r*A.
    np.testing.assert_allclose(grad[2:], [1.5, -1.0, -3.0], rtol=1e-6)


def test_value_loss_unclipped():
    v = jnp.array([1.0, 2.0, -1.0])
    old = jnp.array([0.0, 0.0, 0.0])
    target = jnp.array([3.0, 2.0, 1.0])
    # 0.5 * (V - target)^2 = 0.5*4, 0, 0.5*4; old_value is irrelevant.
    np.testing.assert_allclose(value_loss(v, old, target, None), [2.0, 0.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(value_loss(v, old + 5.0, target, None), [2.0, 0.0, 2.0], rtol=1e-6)


def test_value_loss_clipped_is_pessimistic_max():
    eps = jnp.float32(0.2)
    old = jnp.array([1.0, 1.0, 1.0, 1.0])
    v = jnp.array([2.0, 2.0, 1.1, 0.0])
    target = jnp.array([3.0, 0.0, 3.0, 1.0])
    # case 0: unclipped (2-3)^2 = 1; clipped V = 1 + 0.2 = 1.2 -> (1.2-3)^2 = 3.24; max 3.24 -> 1.62
    # case 1: unclipped (2-0)^2 = 4; clipped V = 1.2 -> 1.44; max 4 -> 2.0
    # case 2: within the clip range: both (1.1-3)^2 = 3.61 -> 1.805
    # case 3: unclipped (0-1)^2 = 1; clipped V = 1 - 0.2 = 0.8 -> 0.04; max 1 -> 0.5
    np.testing.assert_allclose(value_loss(v, old, target, eps), [1.62, 2.0, 1.805, 0.5], rtol=1e-5)


def test_advantage_normalisation_uses_the_population_std():
    # [1, 2, 3]: mean 2, population std sqrt(2/3) (ddof = 0, as the README says) -> [-1.2247, 0, 1.2247].
    np.testing.assert_allclose(normalize(jnp.array([1.0, 2.0, 3.0])), [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)


def test_approx_kl():
    np.testing.assert_array_equal(np.asarray(approx_kl(jnp.zeros(3))), np.zeros(3))
    log_ratio = jnp.array([-2.0, -0.5, -1e-3, 1e-3, 0.5, 2.0])
    kl = np.asarray(approx_kl(log_ratio))
    assert (kl > 0).all()
    r = np.exp(np.asarray(log_ratio, np.float64))
    np.testing.assert_allclose(kl, (r - 1) - np.log(r), rtol=1e-3)  # float32 near 0


# ---- ppo_loss on a tiny batch -----------------------------------------------------
HP = {"clip_eps": jnp.float32(0.2), "vf_coef": jnp.float32(0.5), "ent_coef": jnp.float32(0.01)}
SPECS = {
    "discrete": ActionSpec(discrete=True, num_actions=3),
    "continuous": ActionSpec(
        discrete=False, shape=(2,), low=-np.ones(2, np.float32), high=np.ones(2, np.float32)
    ),
}
N = 16


@pytest.fixture(scope="module", params=["discrete", "continuous"])
def evaluated(request):
    """Everything the ppo_loss tests look at, computed in one compiled call per action kind."""
    policy = make_policy(SPECS[request.param], (8,), "tanh")

    @jax.jit
    def run(key):
        k_init, k_obs, k_act, k_adv, k_tgt = jax.random.split(key, 5)
        params = policy.init(k_init, 4)
        obs = jax.random.normal(k_obs, (N, 4))
        action, log_prob = policy.dist(params, obs).sample_and_log_prob(seed=k_act)
        batch = PPOBatch(
            obs=obs,
            action=action,
            log_prob=log_prob,  # the behaviour policy is the current one
            value=policy.value(params, obs),
            advantage=jax.random.normal(k_adv, (N,)),
            target=jax.random.normal(k_tgt, (N,)),
        )
        def loss(p, b, norm_adv, clip_value):
            return ppo_loss(p, policy, b._replace(advantage=normalize(b.advantage)) if norm_adv else b, HP, clip_value)

        out = {"batch": batch}
        out["on"] = loss(params, batch, False, False)
        out["on_norm_clip"] = loss(params, batch, True, True)
        out["grads"] = jax.grad(lambda p: loss(p, batch, True, True), has_aux=True)(params)[0]
        # Behaviour log-probs 0.5 lower on the first half: ratio e^0.5 ~ 1.65 there (outside
        # [0.8, 1.2]), exactly 1 on the second half.
        shift = jnp.where(jnp.arange(N) < N // 2, 0.5, 0.0)
        out["off"] = loss(params, batch._replace(log_prob=log_prob - shift), False, False)
        return out

    return jax.tree_util.tree_map(np.asarray, run(jax.random.key(0)))


def test_ppo_loss_on_policy(evaluated):
    batch = evaluated["batch"]
    total, info = evaluated["on"]
    assert np.isfinite(total)
    for name, x in info._asdict().items():
        assert np.shape(x) == () and np.isfinite(x), name
    assert info.clip_frac == 0.0
    assert abs(info.approx_kl) < 1e-6
    # ratio 1 everywhere: surrogate = -A; value loss = 0.5 (V - target)^2.
    np.testing.assert_allclose(info.policy_loss, -batch.advantage.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info.value_loss, 0.5 * np.square(batch.value - batch.target).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        total, info.policy_loss + 0.5 * info.value_loss - 0.01 * info.entropy, rtol=1e-5, atol=1e-6
    )
    # With advantage normalisation the on-policy surrogate is -mean(normalised A) = 0; with the
    # clipped value loss and V = old value the value loss is unchanged.
    total_nc, info_nc = evaluated["on_norm_clip"]
    assert np.isfinite(total_nc)
    assert abs(info_nc.policy_loss) < 1e-5
    assert info_nc.clip_frac == 0.0
    np.testing.assert_allclose(info_nc.value_loss, info.value_loss, rtol=1e-6)


def test_ppo_loss_gradient_is_finite(evaluated):
    grads = evaluated["grads"]
    leaves = jax.tree_util.tree_leaves(grads)
    assert leaves and all(np.isfinite(g).all() for g in leaves)
    # Both the actor and the critic receive gradient.
    for part in ("actor", "critic"):
        norm = sum(float(np.square(g).sum()) for g in jax.tree_util.tree_leaves(grads[part]))
        assert norm > 0.0, part


def test_ppo_loss_clip_frac_and_kl_off_policy(evaluated):
    _, info = evaluated["off"]
    np.testing.assert_allclose(info.clip_frac, 0.5, atol=1e-6)
    np.testing.assert_allclose(info.approx_kl, 0.5 * (np.expm1(0.5) - 0.5), rtol=1e-4)
