"""Learning: the trainers solve small tasks in one vmapped call (CPU-sized budgets)."""

import jax
import numpy as np
import pytest

from jaxrl_po import GRPOConfig, PPOConfig, make_train
from jaxrl_po.logs import final_returns
from jaxrl_po.presets import PRESETS

from conftest import full_jit


def train_seeds(config, num_seeds: int) -> np.ndarray:
    """Final return per seed (mean of the last 10% of updates) from one jit(vmap(train)) call (XLA's defaults)."""
    keys = jax.random.split(jax.random.key(42), num_seeds)
    out = full_jit(jax.vmap(make_train(config)))(keys)
    return final_returns(np.asarray(out.metrics.episode_return), np.asarray(out.metrics.env_steps))


@pytest.mark.learning
def test_ppo_cartpole_preset_solves_it_with_four_seeds():
    # The cartpole-ppo preset: 32 envs x 64 steps, 4 epochs x 8 minibatches, lr 2e-3 annealed,
    # 5e5 steps per seed (the budget). Every seed ended at 500 for two sets of 4 seeds
    # when written. (PureJaxRL's 4 x 128, lr 2.5e-4 config solves most seeds but not all: one
    # of four stopped at 370 here.)
    finals = train_seeds(PRESETS["cartpole-ppo"].config, 4)
    assert finals.mean() >= 475, finals


@pytest.mark.learning
def test_ppo_acrobot_preset_solves_it():
    # The acrobot-ppo preset at its full budget (5e5 steps), 2 seeds, must reach the published
    # PPO figure, -80 (Acrobot counts as solved at -100). benchmarks/results.py gives
    # -72.7 +- 3.5 over 8 seeds, every seed between -78.0 and -67.6 (-69.4 +- 2.6, -75.1 to -65.5,
    # before the minibatch shuffle changed to jaxrl_po.update.random_permutation).
    finals = train_seeds(PRESETS["acrobot-ppo"].config, 2)
    assert finals.mean() >= -80, finals


@pytest.mark.learning
def test_ppo_improves_on_pendulum():
    # Continuous control (Gaussian policy, obs normalisation and reward scaling on by default).
    # A random policy scores about -1200 per episode; gymnax's published PPO reaches -130 to
    # -200 after 1e6 steps. On a CI budget of 3e5 steps we require > -400: far above random,
    # and it held with margin (about -160) when this test was written.
    config = PPOConfig(env="Pendulum-v1", num_envs=64, num_steps=128, total_timesteps=300_000,
                       update_epochs=10, num_minibatches=32, lr=1e-3, gamma=0.95)
    finals = train_seeds(config, 2)
    assert finals.mean() > -400, finals


@pytest.mark.learning
def test_grpo_solves_cartpole_with_four_seeds():
    # The GRPO defaults (16 groups x 8, whole episodes, outcome advantages, 8 epochs x 4
    # minibatches, lr 1e-3) on a budget of 7.5e5 alive steps per seed (the default is 1e6).
    # At 1e6, all four seeds passed 475 between 0.50 M and 0.60 M alive steps and ended at
    # 497-500; at 7.5e5 (jax 0.10.2) they ended at 498.9, 495.5, 497.3 and 492.2.
    finals = train_seeds(GRPOConfig(total_timesteps=750_000), 4)
    assert finals.mean() >= 475, finals
