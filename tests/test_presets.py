"""Presets: each loads, validates, and trains briefly to finite metrics; flags override them."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxrl_po import make_train
from jaxrl_po.config import ConfigError, GRPOConfig
from jaxrl_po.presets import PRESETS, get_preset
from jaxrl_po.train import parse

from conftest import fast_jit


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_validates_and_a_tiny_run_gives_finite_metrics(name):
    preset = get_preset(name)
    preset.config.validate()
    # Same algorithm, env and network; a budget of one or two updates with fewer envs.
    if isinstance(preset.config, GRPOConfig):
        tiny = preset.config.replace(num_envs=2 * preset.config.grpo.group_size, num_minibatches=2,
                                     total_timesteps=64, grpo=dataclasses.replace(preset.config.grpo, horizon=16))
    else:
        tiny = preset.config.replace(num_envs=8, num_steps=8, num_minibatches=2, total_timesteps=128)
    metrics = jax.tree_util.tree_map(np.asarray, fast_jit(make_train(tiny))(jax.random.key(0)).metrics)
    ran = metrics.env_steps > 0
    assert ran.any()
    for field in ("policy_loss", "entropy", "approx_kl", "grad_norm"):
        assert np.isfinite(getattr(metrics, field)[ran]).all(), field
    assert (metrics.nonfinite[ran] == 0).all()


def test_flags_override_a_preset_and_set_its_algorithm():
    options, config = parse(["--preset", "pendulum-grpo", "--lr", "3e-4"])
    assert options.algo == "grpo" and config.lr == 3e-4
    assert config.replace(lr=PRESETS["pendulum-grpo"].config.lr) == PRESETS["pendulum-grpo"].config


def test_bad_preset_names_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: cartpole-ppo"):
        get_preset("nope")
    with pytest.raises(ConfigError, match="is for grpo"):
        parse(["--preset", "cartpole-grpo", "--algo", "ppo"])
