"""Networks: orthogonal initialisation without LAPACK, policy heads."""

import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxrl_po.networks import orthogonal


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
