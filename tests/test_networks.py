"""Networks: orthogonal initialisation without LAPACK, the conv torso, policy heads."""

import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxrl_po.envs import make_vec_env
from jaxrl_po.networks import Conv3x3, make_policy, orthogonal


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (64, 1)])
def test_orthogonal_init_is_orthogonal_and_scaled(shape):
    w = np.asarray(orthogonal(np.sqrt(2.0))(jax.random.key(0), shape))
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 2.0 * np.eye(gram.shape[0]), atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 64), (4, 64), (64, 2)])
def test_orthogonal_init_equals_flax_qr_for_the_same_key(shape):
    ours = orthogonal(1.0)(jax.random.key(7), shape)
    flax_qr = nn.initializers.orthogonal(1.0)(jax.random.key(7), shape)
    np.testing.assert_allclose(ours, flax_qr, atol=1e-5)


@pytest.mark.parametrize("env_name", ["CartPole-v1", "Pendulum-v1"])
def test_policy_init_scales_biases_and_log_std(env_name):
    """Hidden layers orthogonal at sqrt(2), the policy head at 0.01, the value head at 1.0, every
    bias 0 and the log-std at log_std_init: each weight matrix's singular values all equal its scale."""
    env = make_vec_env(env_name, 1)
    params = make_policy(env.action_spec, (16, 8), "tanh", log_std_init=-0.7).init(jax.random.key(0), env.obs_dim)
    for net, head_scale in (("actor", 0.01), ("critic", 1.0)):
        leaves = jax.tree_util.tree_flatten_with_path(params[net])[0]
        kernels = [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves if path[-1].key == "kernel"]
        biases = [leaf for path, leaf in leaves if path[-1].key == "bias"]
        assert len(kernels) == len(biases) == 3, kernels
        for (name, kernel), scale in zip(sorted(kernels), (np.sqrt(2.0), np.sqrt(2.0), head_scale)):
            singular = np.linalg.svd(np.asarray(kernel), compute_uv=False)
            np.testing.assert_allclose(singular, scale, rtol=1e-4, err_msg=f"{net}{name}")
        for bias in biases:
            np.testing.assert_array_equal(np.asarray(bias), 0.0)
    if not env.action_spec.discrete:
        np.testing.assert_allclose(np.asarray(params["actor"]["params"]["log_std"]), -0.7)


def test_vmapped_init_does_not_hang():
    # LAPACK QR under vmap hung within 300 calls on this CPU (jaxlib 0.10.2); ours must not.
    script = textwrap.dedent("""
        import jax
        from jaxrl_po.networks import orthogonal
        def init(key):
            keys = jax.random.split(key, 4)
            return [orthogonal(1.0)(k, s) for k, s in zip(keys, [(64, 4), (64, 64), (64, 2), (64, 1)])]
        f = jax.jit(jax.vmap(init))
        keys = jax.random.split(jax.random.key(0), 2)
        for _ in range(300):
            jax.block_until_ready(f(keys))
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_conv3x3_equals_an_unpadded_xla_convolution():
    x = jax.random.normal(jax.random.key(0), (5, 10, 10, 4))
    conv = Conv3x3(16)
    params = conv.init(jax.random.key(1), x)
    ours = conv.apply(params, x)
    dense = params["params"]["Dense_0"]
    # The Dense kernel's rows are (kernel row i, kernel column j, input channel), in that order.
    kernel = dense["kernel"].reshape(3, 3, 4, 16)
    reference = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert ours.shape == (5, 8, 8, 16)
    np.testing.assert_allclose(ours, reference + dense["bias"], rtol=1e-5, atol=1e-5)


def test_conv_torso_policy_on_minatar_shapes():
    env = make_vec_env("Breakout-MinAtar", 2)
    assert env.obs_shape == (10, 10, 4) and env.obs_dim == 400
    policy = make_policy(env.action_spec, (32,), "relu", conv_channels=(8, 8), obs_shape=env.obs_shape)
    params = policy.init(jax.random.key(0), env.obs_dim)
    assert params["actor"]["params"]["Conv3x3_0"]["Dense_0"]["kernel"].shape == (36, 8)
    assert params["actor"]["params"]["Conv3x3_1"]["Dense_0"]["kernel"].shape == (72, 8)
    assert params["actor"]["params"]["Dense_0"]["kernel"].shape == (6 * 6 * 8, 32)
    obs = jax.random.uniform(jax.random.key(1), (7, 3, env.obs_dim))  # any leading batch shape
    assert policy.dist(params, obs).logits.shape == (7, 3, env.action_spec.num_actions)
    assert policy.value(params, obs).shape == (7, 3)
