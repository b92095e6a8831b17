"""The shared update loop: segments, non-finite guard."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_po import GRPOConfig, GRPOOptions, loop, make_algorithm, make_train, rollout
from jaxrl_po.loop import batched_under_vmap, describe_nonfinite, keep_if_finite, nonfinite_code, run_segment

from conftest import tiny_ppo_config

GRPO_TINY = GRPOConfig(num_envs=8, total_timesteps=400, num_minibatches=2, update_epochs=1,
                       hidden_sizes=(16,), grpo=GRPOOptions(group_size=4, horizon=20, chunk_size=10))


def concat_segments(config, lengths, buffer_rows=4):
    """Run ``train``'s budget as segments of the given lengths; returns (state, metrics rows that ran)."""
    algo = make_algorithm(config)
    init = jax.jit(algo.init)
    segment = jax.jit(functools.partial(run_segment, algo, length=buffer_rows))
    state, parts, i = init(jax.random.key(7), {}), [], 0
    while not bool(algo.finished(state)):
        state, rows = segment(state, {}, state.update + lengths[i % len(lengths)])
        rows = jax.tree_util.tree_map(np.asarray, rows)
        parts.append(jax.tree_util.tree_map(lambda x: x[rows.env_steps > 0], rows))
        i += 1
    return state, jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *parts)


def key_data(tree):
    return jax.tree_util.tree_map(
        lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


@pytest.mark.parametrize("config", [tiny_ppo_config(total_timesteps=8 * 4 * 7), GRPO_TINY], ids=["ppo", "grpo"])
def test_segment_lengths_do_not_change_results(config):
    # The CLI picks segment lengths by wall time; with one compiled segment program the results
    # must not depend on them (bit-exact), and they match one train() call (a different
    # program, so XLA may fuse differently: equal up to float rounding).
    state_a, rows_a = concat_segments(config, [1, 3, 2])
    state_b, rows_b = concat_segments(config, [4])
    for name in rows_a._fields:
        np.testing.assert_array_equal(getattr(rows_a, name), getattr(rows_b, name), err_msg=name)
    for a, b in zip(jax.tree_util.tree_leaves(key_data(state_a)), jax.tree_util.tree_leaves(key_data(state_b))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    whole = jax.tree_util.tree_map(np.asarray, jax.jit(make_train(config))(jax.random.key(7)).metrics)
    ran = whole.env_steps > 0
    np.testing.assert_array_equal(whole.env_steps[ran], rows_a.env_steps)
    for name in rows_a._fields:
        np.testing.assert_allclose(getattr(whole, name)[ran], getattr(rows_a, name), rtol=1e-3, atol=1e-6, err_msg=name)


def test_nonfinite_code_and_guard():
    finite = {"w": jnp.ones(3)}
    assert int(nonfinite_code({"loss": jnp.float32(1)}, jnp.float32(2), finite)) == 0
    assert int(nonfinite_code({"loss": jnp.float32(jnp.nan)}, jnp.float32(2), finite)) == 1
    assert int(nonfinite_code({"loss": jnp.float32(1)}, jnp.float32(jnp.inf), {"w": jnp.array([1, jnp.inf])})) == 6
    assert describe_nonfinite(5) == "loss and parameters"

    from typing import NamedTuple

    class S(NamedTuple):
        w: jax.Array
        key: jax.Array
        nonfinite: jax.Array

    old = S(jnp.ones(2), jax.random.key(0), jnp.int32(0))
    new = S(jnp.full(2, jnp.nan), jax.random.key(1), jnp.int32(0))
    kept = keep_if_finite(old, new, jnp.int32(4))
    np.testing.assert_array_equal(kept.w, old.w)
    assert int(kept.nonfinite) == 4
    np.testing.assert_array_equal(jax.random.key_data(kept.key), jax.random.key_data(old.key))
    taken = keep_if_finite(old, new, jnp.int32(0))
    assert np.isnan(np.asarray(taken.w)).all() and int(taken.nonfinite) == 0


def test_a_diverging_run_stops_at_its_first_bad_update():
    config = tiny_ppo_config(total_timesteps=8 * 4 * 5, lr=1e30)
    out = jax.jit(make_train(config))(jax.random.key(0))
    m = jax.tree_util.tree_map(np.asarray, out.metrics)
    assert int(out.state.update) == 0 and int(out.state.nonfinite) > 0
    assert m.nonfinite[0] > 0 and (m.env_steps[1:] == 0).all()  # no update after the bad one


def test_batched_under_vmap_batches_every_leaf_and_leaves_the_program_unchanged(monkeypatch):
    tree = (jnp.float32(1.5), jnp.arange(3), jnp.zeros(2))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool((a == b).all()), batched_under_vmap(tree), tree))
    # Under vmap the leaves that do not depend on the run get the batch axis too.
    out = jax.vmap(lambda x: batched_under_vmap((x, jnp.arange(3))))(jnp.arange(4.0))
    np.testing.assert_array_equal(out[1], np.tile(np.arange(3), (4, 1)))

    # The loops start all batched, which only saves tracing rounds: GRPO's compiled program
    # (its update loop and its episode-rollout loop both use it) is the same without it.
    def compiled():
        keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
        text = jax.jit(jax.vmap(make_train(GRPO_TINY))).lower(keys).compile().as_text()
        text = re.sub(r", metadata=\{[^}]*\}", "", text)  # source locations differ, instructions must not
        return [line for line in text.splitlines() if "file_name_id" not in line and ".py\"" not in line]

    with_marker = compiled()
    for module in (loop, rollout):
        monkeypatch.setattr(module, "batched_under_vmap", lambda tree: tree)
    assert compiled() == with_marker
