"""Shipped settings per environment and algorithm: ``--preset NAME``.

Each preset is a full config whose results were measured (the ``measured``
line says where); explicit flags given with ``--preset`` override its fields.
"""

from __future__ import annotations

from typing import NamedTuple

from jaxrl_po.config import BaseConfig, ConfigError, GRPOConfig, GRPOOptions, PPOConfig


class Preset(NamedTuple):
    algo: str  # "ppo" | "grpo"
    config: BaseConfig
    measured: str  # the result behind it: mean final return over seeds, and where it comes from


PRESETS: dict[str, Preset] = {
    "cartpole-ppo": Preset(
        "ppo",
        PPOConfig(env="CartPole-v1", num_envs=32, num_steps=64, update_epochs=4, num_minibatches=8,
                  lr=2e-3, total_timesteps=500_000),
        "500 on every seed at 5e5 steps (tests/test_learning.py, 4 seeds)",
    ),
    "acrobot-ppo": Preset(
        "ppo",
        PPOConfig(env="Acrobot-v1", num_envs=64, num_steps=128, update_epochs=4, num_minibatches=8,
                  lr=1e-3, total_timesteps=500_000),
        "-84.1 +- 0.7 at 5e5 steps (benchmarks/grpo_vs_ppo.py, 8 seeds)",
    ),
    "pendulum-ppo": Preset(
        "ppo",
        PPOConfig(env="Pendulum-v1", num_envs=64, num_steps=128, update_epochs=10, num_minibatches=32,
                  lr=1e-3, gamma=0.95, total_timesteps=1_000_000),
        "-167.5 +- 15.9 at 1e6 steps (benchmarks/grpo_vs_ppo.py, 8 seeds)",
    ),
    "cartpole-grpo": Preset(
        "grpo",
        GRPOConfig(env="CartPole-v1", total_timesteps=1_500_000),
        "499.7 +- 0.3 at 1.5e6 alive steps (benchmarks/grpo_vs_ppo.py, 8 seeds)",
    ),
    "acrobot-grpo": Preset(
        "grpo",
        GRPOConfig(env="Acrobot-v1", num_envs=32, num_minibatches=2, total_timesteps=500_000),
        "-84.9 +- 1.2 at 5e5 alive steps (benchmarks/grpo_vs_ppo.py, 8 seeds)",
    ),
    "pendulum-grpo": Preset(
        "grpo",
        GRPOConfig(env="Pendulum-v1", num_envs=32, num_minibatches=2, gamma=0.95, total_timesteps=1_000_000,
                   grpo=GRPOOptions(advantage="rtg")),
        "-187.9 +- 33.5 at 1e6 alive steps (benchmarks/grpo_vs_ppo.py, 8 seeds)",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; raises ConfigError("preset", ...) listing the valid names."""
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def describe_presets() -> str:
    """One line per preset, for ``--help``."""
    return "\n".join(f"  {name:<15} {p.algo:<4} {p.config.env:<13} {p.measured}" for name, p in PRESETS.items())
