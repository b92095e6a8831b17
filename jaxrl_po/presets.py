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
    measured: str  # the result behind it (training-time and final-policy returns over seeds) and where it comes from


def minatar_ppo(env: str) -> PPOConfig:
    """One setting for the four MinAtar games: a 256x256 ReLU MLP over the flattened 10x10xC grid.

    The MLP, not the conv torso (``conv_channels``): on Breakout at 3.4e5 steps (2 seeds,
    lr 1e-3) it reached returns 8.2 and 10.3, a 16-channel conv layer before the same MLP
    7.0 and 7.2, and a 64x64 tanh MLP 5.9 and 6.0 (README, Presets).
    """
    return PPOConfig(env=env, num_envs=128, num_steps=128, update_epochs=4, num_minibatches=8,
                     hidden_sizes=(256, 256), activation="relu", lr=1e-3, ent_coef=0.01,
                     total_timesteps=10_000_000)


MINATAR_MEASURED = {
    "Breakout": "47.7 +- 11.5 at 1e7 steps (six seeds 43-64, two stuck at 28-29), final policy 46.8 +- 11.2 with "
                "sampled actions (benchmarks/results.py, 8 seeds, CPU, 84 min)",
    "SpaceInvaders": "185.1 +- 0.7 at 1e7 steps (every seed 183.7-186.4), final policy 186.2 +- 1.0 with sampled "
                     "actions (CLI run in two sittings + benchmarks/results.py --from-run, 8 seeds, CPU, 138 min)",
    "Asterix": "19.7 +- 2.2 at 1e7 steps (every seed 16.5-23.3), final policy 19.8 +- 2.3 with sampled actions "
               "(benchmarks/results.py, 8 seeds, CPU, 111 min)",
    "Freeway": "62.6 +- 0.1 at 1e7 steps (every seed 62.5-62.8), final policy 62.9 +- 0.3 with sampled actions "
               "(CLI run + benchmarks/results.py --from-run, 8 seeds, CPU, 107 min)",
}


PRESETS: dict[str, Preset] = {
    "cartpole-ppo": Preset(
        "ppo",
        PPOConfig(env="CartPole-v1", num_envs=32, num_steps=64, update_epochs=4, num_minibatches=8,
                  lr=2e-3, total_timesteps=500_000),
        "500.0 +- 0.0 at 5e5 steps, final policy 500.0 +- 0.0 with sampled actions (benchmarks/results.py, 8 seeds, CPU)",
    ),
    "acrobot-ppo": Preset(
        "ppo",
        PPOConfig(env="Acrobot-v1", num_envs=16, num_steps=128, update_epochs=8, num_minibatches=8,
                  lr=5e-3, total_timesteps=500_000),
        "-72.7 +- 3.5 at 5e5 steps, final policy -70.3 +- 3.2 with sampled actions (benchmarks/results.py, 8 seeds, CPU)",
    ),
    "pendulum-ppo": Preset(
        "ppo",
        PPOConfig(env="Pendulum-v1", num_envs=64, num_steps=128, update_epochs=10, num_minibatches=32,
                  lr=1e-3, gamma=0.98, gae_lambda=0.9, ent_coef=0.02, total_timesteps=1_000_000),
        "-153.0 +- 2.5 at 1e6 steps, final policy -137.5 +- 2.6 with sampled actions (benchmarks/results.py, 8 seeds, CPU)",
    ),
    "mountaincar-ppo": Preset(
        "ppo",
        PPOConfig(env="MountainCarContinuous-v0", num_envs=64, num_steps=128, update_epochs=4, num_minibatches=8,
                  lr=2e-3, gamma=0.999, total_timesteps=1_000_000),
        "95.4 +- 0.1 at 1e6 steps, final policy 95.4 +- 0.1 with sampled actions (benchmarks/results.py, 8 seeds, CPU)",
    ),
    **{f"{game.lower()}-ppo": Preset("ppo", minatar_ppo(f"{game}-MinAtar"), measured)
       for game, measured in MINATAR_MEASURED.items()},
    "cartpole-grpo": Preset(
        "grpo",
        GRPOConfig(env="CartPole-v1", total_timesteps=1_500_000),
        "499.9 +- 0.2 at 1.5e6 alive steps, final policy 500.0 +- 0.0 with sampled actions (benchmarks/results.py, 8 seeds, CPU)",
    ),
    "acrobot-grpo": Preset(
        "grpo",
        GRPOConfig(env="Acrobot-v1", num_envs=32, num_minibatches=2, lr=5e-3, anneal_lr=True,
                   total_timesteps=500_000, grpo=GRPOOptions(advantage="rtg")),
        "-79.0 +- 1.9 at 5e5 alive steps, final policy -78.7 +- 2.2 with sampled actions (benchmarks/results.py, 8 seeds, CPU)",
    ),
    "mountaincar-grpo": Preset(
        "grpo",
        GRPOConfig(env="MountainCarContinuous-v0", total_timesteps=1_000_000),
        "92.6 +- 0.5 at 1e6 alive steps, final policy 92.8 +- 0.5 with sampled actions (benchmarks/results.py, 8 seeds, CPU)",
    ),
    "pendulum-grpo": Preset(
        "grpo",
        GRPOConfig(env="Pendulum-v1", num_envs=32, num_minibatches=2, gamma=0.95, ent_coef=0.01,
                   lr=3e-3, anneal_lr=True, total_timesteps=1_000_000,
                   grpo=GRPOOptions(advantage="rtg")),
        "-167.7 +- 9.2 at 1e6 alive steps, final policy -144.4 +- 4.0 with sampled actions (benchmarks/results.py, 8 seeds, CPU)",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; raises ConfigError("preset", ...) listing the valid names."""
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]

