"""jaxrl_po: PPO and GRPO trained end to end on device with JAX and gymnax."""

from jaxrl_po.config import ConfigError, GRPOConfig, GRPOOptions, PPOConfig
from jaxrl_po.grpo import make_train as make_grpo_train
from jaxrl_po.ppo import TrainOutput
from jaxrl_po.ppo import make_train as make_ppo_train


def make_train(config, callback=None):
    """``train(key, hparams=None, run_id=0) -> TrainOutput`` for a PPOConfig or a GRPOConfig."""
    if isinstance(config, GRPOConfig):
        return make_grpo_train(config, callback)
    if isinstance(config, PPOConfig):
        return make_ppo_train(config, callback)
    raise TypeError(f"config must be a PPOConfig or GRPOConfig, got {type(config).__name__}")


__all__ = ["ConfigError", "GRPOConfig", "GRPOOptions", "PPOConfig", "TrainOutput", "make_train"]
