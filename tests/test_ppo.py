"""PPO trainer (jaxrl_po.make_train on a PPOConfig): metric shapes, determinism, compile-once, NaN stats.

One real compilation (the module fixture) serves most tests; shape questions are answered
with ``jax.eval_shape``, which traces without compiling.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrl_po.ppo as ppo
from jaxrl_po import make_train
from jaxrl_po.ppo import PPOMetrics


NUM_UPDATES = 6


class TraceCounter:
    """Counts Python-side calls (= traces inside jit/scan) of functions patched into jaxrl_po.ppo."""

    def __init__(self, monkeypatch):
        self.counts = {"ppo_loss": 0, "rollout": 0}
        for name in self.counts:
            original = getattr(ppo, name)

            def counted(*args, _name=name, _original=original, **kwargs):
                self.counts[_name] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(ppo, name, counted)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def _tree_equal(a, b) -> bool:
    if jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b):
        return False
    return all(
        np.array_equal(np.asarray(x), np.asarray(y), equal_nan=np.issubdtype(np.asarray(x).dtype, np.floating))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


def _to_host(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _params_of(output):
    return output.state.params


@pytest.fixture(scope="module")
def runs(make_tiny_ppo_config):
    """Compile the tiny CartPole trainer once and call it with several keys / hyperparameters."""
    config = make_tiny_ppo_config()
    assert config.num_updates == NUM_UPDATES
    with pytest.MonkeyPatch.context() as mp:
        counter = TraceCounter(mp)
        train = jax.jit(make_train(config))
        hp = config.hparams()
        hp_other = {**hp, "lr": jnp.float32(1e-2), "gamma": jnp.float32(0.9), "clip_eps": jnp.float32(0.1)}
        out = {}
        out["seed0"] = jax.block_until_ready(train(jax.random.key(0), hp))
        traces_first = counter.snapshot()
        out["seed0_again"] = jax.block_until_ready(train(jax.random.key(0), hp))
        out["seed1"] = jax.block_until_ready(train(jax.random.key(1), hp))
        out["seed0_other_hp"] = jax.block_until_ready(train(jax.random.key(0), hp_other))
        traces_last = counter.snapshot()
        cache_size = train._cache_size()
    host = {k: jax.tree_util.tree_map(_to_host, v) for k, v in out.items()}
    return dict(config=config, out=host, traces_first=traces_first, traces_last=traces_last, cache_size=cache_size)


def test_metric_shapes_single_seed(runs):
    metrics = runs["out"]["seed0"].metrics
    assert isinstance(metrics, PPOMetrics)
    for name, leaf in metrics._asdict().items():
        assert leaf.shape == (NUM_UPDATES,), name
    steps = runs["config"].steps_per_update
    np.testing.assert_array_equal(metrics.env_steps, steps * np.arange(1, NUM_UPDATES + 1))
    # Linear annealing from lr to 0 over the updates.
    lr0 = runs["config"].lr
    np.testing.assert_allclose(metrics.lr, lr0 * (1 - np.arange(NUM_UPDATES) / NUM_UPDATES), rtol=1e-5)
    for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "explained_var", "episodes"):
        assert np.isfinite(getattr(metrics, name)).all(), name


def test_metric_shapes_under_vmap(make_tiny_ppo_config):
    train = make_train(make_tiny_ppo_config())
    keys = jax.random.split(jax.random.key(0), 3)
    shapes = jax.eval_shape(jax.vmap(train), keys)
    for name, leaf in shapes.metrics._asdict().items():
        assert leaf.shape == (3, NUM_UPDATES), name
    # Sweeping a traced hyperparameter alongside the seeds (one program for the grid).
    hp = {"lr": jnp.array([1e-4, 3e-4, 1e-3], jnp.float32)}
    shapes = jax.eval_shape(jax.vmap(train), keys, hp)
    for name, leaf in shapes.metrics._asdict().items():
        assert leaf.shape == (3, NUM_UPDATES), name


def test_same_seed_is_bit_identical(runs):
    a, b = runs["out"]["seed0"], runs["out"]["seed0_again"]
    assert _tree_equal(a.metrics, b.metrics)
    assert _tree_equal(_params_of(a), _params_of(b))


def test_different_seed_or_hparams_differ(runs):
    a = runs["out"]["seed0"]
    for other in ("seed1", "seed0_other_hp"):
        b = runs["out"][other]
        assert not _tree_equal(_params_of(a), _params_of(b)), other
        assert not _tree_equal(a.metrics, b.metrics), other


def test_no_retrace_or_recompile_across_updates_keys_and_hparams(runs):
    first, last = runs["traces_first"], runs["traces_last"]
    # The update body is traced once for the whole scan over updates, not once per update ...
    assert 1 <= first["rollout"] <= 2, first
    assert 1 <= first["ppo_loss"] <= 2, first
    assert first["ppo_loss"] < NUM_UPDATES
    # ... and new keys or new values of traced hyperparameters reuse the compiled program.
    assert last == first
    assert runs["cache_size"] == 1


def test_trace_count_does_not_depend_on_number_of_updates(make_tiny_ppo_config, monkeypatch):
    counter = TraceCounter(monkeypatch)
    counts = []
    for updates in (1, 5):
        config = make_tiny_ppo_config(total_timesteps=8 * 4 * updates)
        before = counter.snapshot()
        jax.eval_shape(make_train(config), jax.random.key(0))
        after = counter.snapshot()
        counts.append({k: after[k] - before[k] for k in after})
    assert counts[0] == counts[1], counts
    assert counts[0]["ppo_loss"] >= 1


def test_episode_return_is_nan_when_no_episode_finished(runs):
    # CartPole cannot fail in fewer than ~8 steps from its reset box (|state| <= 0.05), so the
    # first update (4 steps per env) finishes no episode.
    metrics = runs["out"]["seed0"].metrics
    assert metrics.episodes[0] == 0
    assert np.isnan(metrics.episode_return[0]) and np.isnan(metrics.episode_length[0])
    # In general: NaN exactly where no episode finished, finite elsewhere.
    for key in ("seed0", "seed1"):
        m = runs["out"][key].metrics
        none = m.episodes == 0
        np.testing.assert_array_equal(np.isnan(m.episode_return), none)
        np.testing.assert_array_equal(np.isnan(m.episode_length), none)
    assert (metrics.episodes > 0).any(), "the scenario should also finish some episodes"
    finished = metrics.episodes > 0
    # CartPole pays 1 per step, so the mean return equals the mean length.
    np.testing.assert_allclose(metrics.episode_return[finished], metrics.episode_length[finished], rtol=1e-6)


def test_episode_return_nan_two_steps_one_update(make_tiny_ppo_config):
    # The minimal scenario: 2 envs x 2 steps, 1 update -- no CartPole episode can end in 2 steps.
    config = make_tiny_ppo_config(num_envs=2, num_steps=2, num_minibatches=1, update_epochs=1, total_timesteps=4)
    assert config.num_updates == 1
    metrics = jax.tree_util.tree_map(np.asarray, jax.jit(make_train(config))(jax.random.key(3)).metrics)
    assert metrics.episode_return.shape == (1,)
    assert metrics.episodes[0] == 0
    assert np.isnan(metrics.episode_return[0]), metrics.episode_return
    assert np.isnan(metrics.episode_length[0])


@pytest.mark.parametrize("num_envs, num_steps", [(2, 2), (8, 64)])
def test_metrics_do_not_grow_with_steps_per_update(make_tiny_ppo_config, num_envs, num_steps):
    updates = 3
    config = make_tiny_ppo_config(
        num_envs=num_envs, num_steps=num_steps, num_minibatches=2, total_timesteps=num_envs * num_steps * updates
    )
    assert config.num_updates == updates
    shapes = jax.eval_shape(make_train(config), jax.random.key(0))
    for name, leaf in shapes.metrics._asdict().items():
        assert leaf.shape == (updates,), name


def _gae_by_hand(reward, v_obs, v_final, terminated, truncated, gamma, lam):
    """GAE from per-step values with the bootstrap chosen case by case (plain Python).

    The next state's value is V(obs[t+1]) while the episode goes on, V(final_obs[t]) where it
    was truncated (or at the rollout's last step) and 0 where it terminated.
    """
    T, B = reward.shape
    advantage = np.zeros((T, B))
    for b in range(B):
        running = 0.0
        for t in reversed(range(T)):
            if terminated[t, b]:
                next_value = 0.0
            elif truncated[t, b] or t == T - 1:
                next_value = v_final[t, b]
            else:
                next_value = v_obs[t + 1, b]
            delta = reward[t, b] + gamma * next_value - v_obs[t, b]
            ends = terminated[t, b] or truncated[t, b]
            running = delta + gamma * lam * (0.0 if ends else running)
            advantage[t, b] = running
    return advantage


def test_truncated_steps_bootstrap_from_the_final_observation():
    """PPO's advantages on a real Pendulum rollout (episodes truncated at step 200) against a hand loop."""
    from jaxrl_po.envs import make_vec_env
    from jaxrl_po.networks import make_policy
    from jaxrl_po.rollout import init_env_carry, rollout

    env = make_vec_env("Pendulum-v1", 2)
    policy = make_policy(env.action_spec, (16,), "tanh")
    k_params, k_critic, k_env, k_roll = jax.random.split(jax.random.key(3), 4)
    params = policy.init(k_params, env.obs_dim)
    # A critic far from zero, so that which observation is bootstrapped from shows in the numbers.
    params = jax.tree_util.tree_map(lambda p, q: p + q, params, policy.init(k_critic, env.obs_dim))
    gamma, lam = 0.99, 0.95
    carry = init_env_carry(k_env, env, False)
    _, traj = jax.jit(lambda key: rollout(key, carry, params, policy, env, 210, False, False, jnp.float32(gamma)))(k_roll)
    value, advantage, target = jax.jit(lambda t: ppo.rollout_advantages(policy, params, t, gamma, lam))(traj)

    traj = jax.tree_util.tree_map(np.asarray, traj)
    terminated, truncated = traj.terminated, traj.done & ~traj.terminated
    assert truncated[199].all() and truncated.sum() == 2 and not terminated.any()  # Pendulum only truncates
    v_obs = np.asarray(policy.value(params, traj.obs), np.float64)
    v_final = np.asarray(policy.value(params, traj.final_obs), np.float64)
    reward = traj.reward.astype(np.float64)
    expected = _gae_by_hand(reward, v_obs, v_final, terminated, truncated, gamma, lam)
    np.testing.assert_allclose(np.asarray(advantage), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(target), expected + v_obs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(value), v_obs, rtol=1e-5, atol=1e-5)
    # Bootstrapping from the next episode's first observation instead would be visibly wrong.
    delta_if_reset_obs = reward[199] + gamma * v_obs[200] - v_obs[199]
    assert np.abs(expected[199] - delta_if_reset_obs).min() > 1e-2


def test_the_update_computes_its_advantages_with_rollout_advantages(monkeypatch):
    calls = []
    original = ppo.rollout_advantages
    monkeypatch.setattr(ppo, "rollout_advantages", lambda *args: calls.append(args) or original(*args))
    from jaxrl_po.config import PPOConfig

    algo = ppo.make_algorithm(PPOConfig(num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=64))
    state = jax.eval_shape(algo.init, jax.random.key(0), {})
    jax.eval_shape(algo.update, state, {})
    assert len(calls) == 1


# ---- Python API input ----------------------------------------------------------------


def test_configs_take_numpy_values_and_refuse_wrong_kinds_by_name():
    import json

    from jaxrl_po.config import ConfigError, GRPOConfig, GRPOOptions, PPOConfig, to_dict

    config = PPOConfig(num_envs=np.int64(64), lr=np.float32(1e-3), hidden_sizes=[np.int32(32), 32], norm_adv=np.bool_(True))
    config.validate()  # numpy values used to be refused as "must be a positive integer, got np.int64(64)"
    assert (type(config.num_envs), type(config.lr), config.hidden_sizes, config.norm_adv) == (int, float, (32, 32), True)
    assert hash(config) == hash(config.replace()) and json.loads(json.dumps(to_dict(config)))["num_envs"] == 64
    bad = [  # a truthy string used to switch a feature on; an int or None for a list failed deep inside
        (lambda: PPOConfig(normalize_obs="False"), "normalize_obs", "must be True or False (or None: the default)"),
        (lambda: PPOConfig(anneal_lr="no"), "anneal_lr", "must be True or False, got 'no'"),
        (lambda: PPOConfig(norm_adv=0), "norm_adv", "got 0"),
        (lambda: PPOConfig(hidden_sizes=64), "hidden_sizes", "must be a sequence"),
        (lambda: GRPOConfig(grpo={"group_size": 8}), "grpo", "must be a GRPOOptions"),
        (lambda: GRPOOptions(shared_reset="yes"), "shared_reset", "must be True or False"),
        # The CLI reads 1e6 as 1000000; in Python it stays a float: say how to write it.
        (lambda: PPOConfig(total_timesteps=1e6).validate(), "total_timesteps",
         "must be a positive integer, got 1000000.0 (write 1_000_000)"),
    ]
    for make, field, message in bad:
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            make()
        assert err.value.field == field


def test_an_unknown_hyperparameter_name_is_refused_inside_jit(make_tiny_ppo_config):
    from jaxrl_po.config import ConfigError

    config = make_tiny_ppo_config()
    train = make_train(config)
    with pytest.raises(ConfigError, match="^hparams: unknown hyperparameter 'learning_rate'; traced: clip_eps, "):
        jax.eval_shape(train, jax.random.key(0), {"learning_rate": jnp.float32(0.5)})  # used to train at the default lr
    jax.eval_shape(train, jax.random.key(0), {"lr": jnp.float32(0.5)})


def test_make_runs_checks_seeds_and_sweep_values():
    from jaxrl_po.config import ConfigError, PPOConfig
    from jaxrl_po.sweep import make_runs

    config = PPOConfig()
    runs = make_runs(config, [np.int64(3)], {"lr": np.array([1e-4, 1e-3], np.float32)})
    assert runs.seeds == [3, 3] and len(runs.settings) == 2
    for seeds, grid, message in [
        ([-1], None, "seeds: must be an integer from 0 to 2**32 - 1, got -1"),  # used to raise OverflowError
        ([0.5], None, "got 0.5"),  # used to be seed 0
        ([0, 0], None, "seeds: seed 0 is given twice"),
        ([], None, "seeds: needs at least one seed"),
        ([0], {"lr": 1e-3}, "sweep: lr: values must be a list of numbers, got 0.001"),  # used to raise TypeError
        (4, None, "seeds: must be a sequence of seeds, e.g. range(4), got 4"),  # used to raise TypeError
        # A repeated value trained the same runs twice, and rank_configs counted them as more seeds.
        ([0], {"lr": [1e-3, 1e-3, 2e-3]}, "sweep: lr: 0.001 is given twice"),
        ([0], {"lr": [1e-3, 1.0000000000000002e-3]}, "(0.0010000000000000002 equals 0.001 in float32)"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            make_runs(config, seeds, grid)


# ---- one whole update against an SGD loop written out here -----------------------------


def _adam_step_by_hand(grads, moments, step, max_grad_norm, lr, b1=0.9, b2=0.999, eps=1e-5):
    """Global-norm clipping then Adam, in float64 numpy: (parameter deltas, new moments) per leaf."""
    norm = np.sqrt(sum(np.square(g).sum() for g in grads))
    scale = min(1.0, max_grad_norm / norm)
    deltas, new_moments = [], []
    for g, (m, v) in zip(grads, moments):
        g = g * scale
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**step), v / (1 - b2**step)
        deltas.append(-lr * m_hat / (np.sqrt(v_hat) + eps))
        new_moments.append((m, v))
    return deltas, new_moments, norm


def _ppo_loss_by_hand(policy, clip, vf_coef, ent_coef):
    """(params, minibatch) -> (loss, (surrogate, value loss, approx KL, clip fraction)), advantages normalised here."""

    def loss(params, mb):
        a = (mb["advantage"] - mb["advantage"].mean()) / (mb["advantage"].std() + 1e-8)
        dist = policy.dist(params, mb["obs"])
        ratio = jnp.exp(dist.log_prob(mb["action"]) - mb["log_prob"])
        surrogate = -jnp.minimum(ratio * a, jnp.clip(ratio, 1 - clip, 1 + clip) * a).mean()
        value_loss = 0.5 * jnp.square(policy.value(params, mb["obs"]) - mb["target"]).mean()
        kl = ((ratio - 1) - jnp.log(ratio)).mean()
        clipped = (jnp.abs(ratio - 1) > clip).mean()
        total = surrogate + vf_coef * value_loss - ent_coef * dist.entropy().mean()
        return total, (surrogate, value_loss, kl, clipped)

    return loss


def _ppo_update_by_hand(config, policy, env, state, moments, step):
    """One PPO update written out: GAE by hand, per-minibatch advantage normalisation, the loss
    from its definition, clipping and Adam in numpy. Returns (params, moments, step, metrics)."""
    from jaxrl_po.rollout import rollout
    from jaxrl_po.update import random_permutation

    hp = config.hparams()
    gamma, lam = float(hp["gamma"]), float(hp["gae_lambda"])
    grad = jax.jit(jax.grad(_ppo_loss_by_hand(policy, *(float(hp[k]) for k in ("clip_eps", "vf_coef", "ent_coef"))),
                            has_aux=True))
    _, rollout_key, sgd_key = jax.random.split(state.key, 3)
    _, traj = rollout(rollout_key, state.env, state.params, policy, env, config.num_steps, True, True, hp["gamma"])
    traj = jax.tree_util.tree_map(np.asarray, traj)
    v_obs = np.asarray(policy.value(state.params, traj.obs), np.float64)
    v_final = np.asarray(policy.value(state.params, traj.final_obs), np.float64)
    truncated = traj.done & ~traj.terminated
    advantage = _gae_by_hand(traj.reward.astype(np.float64), v_obs, v_final, traj.terminated, truncated, gamma, lam)
    target = advantage + v_obs
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    data = dict(obs=flat(traj.obs), action=flat(traj.action), log_prob=flat(traj.log_prob),
                advantage=flat(advantage), target=flat(target))

    lr = float(hp["lr"]) * (1 - int(state.update) / config.num_updates)
    params, treedef = jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_structure(state.params)
    params = [np.asarray(p, np.float64) for p in params]
    seen = []
    n = len(data["target"])
    for epoch_key in jax.random.split(sgd_key, config.update_epochs):
        order = np.asarray(random_permutation(epoch_key, n)).reshape(config.num_minibatches, -1)
        for idx in order:
            mb = {k: jnp.asarray(v[idx], jnp.float32) for k, v in data.items()}
            current = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(p, jnp.float32) for p in params])
            grads, aux = grad(current, mb)
            step += 1
            deltas, moments, norm = _adam_step_by_hand(
                [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(grads)], moments, step,
                float(hp["max_grad_norm"]), lr)
            params = [p + d for p, d in zip(params, deltas)]
            seen.append([float(x) for x in aux] + [norm])
    policy_loss, value_loss, approx_kl, clip_frac, grad_norm = np.mean(seen, axis=0)
    metrics = dict(policy_loss=policy_loss, value_loss=value_loss, approx_kl=approx_kl, clip_frac=clip_frac,
                   grad_norm=grad_norm, lr=lr, explained_var=1 - advantage.var() / target.var())
    return params, moments, step, metrics


def test_two_updates_match_an_sgd_loop_written_out_by_hand():
    """Two PPO updates on Pendulum (normalisation and reward scaling on) against the same updates
    written out here. The settings make every piece matter: γ, λ and a value coefficient off their defaults,
    gradient clipping that binds at every step, annealing, entropy, and two minibatches per epoch
    whose advantages are normalised separately."""
    from jaxrl_po.config import PPOConfig
    from jaxrl_po.envs import make_vec_env
    from jaxrl_po.networks import policy_for

    config = PPOConfig(env="Pendulum-v1", num_envs=4, num_steps=8, num_minibatches=2, update_epochs=2,
                       total_timesteps=4 * 8 * 3, hidden_sizes=(8,), grad_piece_size=0, lr=3e-2,
                       max_grad_norm=0.3, vf_coef=0.7, ent_coef=0.01, clip_eps=0.1, gamma=0.9, gae_lambda=0.8)
    algo = ppo.make_algorithm(config)
    env = make_vec_env(config.env, config.num_envs)
    policy = policy_for(config, env)
    update = jax.jit(algo.update)
    state = jax.jit(algo.init)(jax.random.key(0), config.hparams())
    moments = [(np.zeros(p.shape), np.zeros(p.shape)) for p in jax.tree_util.tree_leaves(state.params)]
    step = 0
    for _ in range(2):
        expected, moments, step, expected_metrics = _ppo_update_by_hand(config, policy, env, state, moments, step)
        state, metrics = update(state, config.hparams())
        for got, want in zip(jax.tree_util.tree_leaves(state.params), expected):
            np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)
        assert expected_metrics["grad_norm"] > 2 * float(config.max_grad_norm), "clipping should bind"
        for name, want in expected_metrics.items():
            np.testing.assert_allclose(float(getattr(metrics, name)), want, rtol=1e-4, atol=1e-6, err_msg=name)
