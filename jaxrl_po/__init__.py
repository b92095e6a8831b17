"""jaxrl_po: PPO and GRPO trained end to end on device with JAX and gymnax."""

from jaxrl_po.stop import stop_at_once_while_a_cli_loads

stop_at_once_while_a_cli_loads()  # before the imports below (jax): a Ctrl-C then is one line, not a traceback

from jaxrl_po import threefry
from jaxrl_po.config import ConfigError, GRPOConfig, GRPOOptions, PPOConfig
from jaxrl_po.loop import TrainOutput

threefry.install()  # same random bits, fewer XLA operations on CPU (jaxrl_po/threefry.py)


def make_algorithm(config):
    """:class:`jaxrl_po.loop.Algorithm` (init / update / finished) for a PPOConfig or a GRPOConfig."""
    from jaxrl_po import grpo, ppo

    if isinstance(config, GRPOConfig):
        return grpo.make_algorithm(config)
    if isinstance(config, PPOConfig):
        return ppo.make_algorithm(config)
    raise TypeError(f"config must be a PPOConfig or GRPOConfig, got {type(config).__name__}")


def make_train(config):
    """``train(key, hparams=None) -> TrainOutput`` for a PPOConfig or a GRPOConfig.

    ``hparams`` overrides the traced hyperparameters (a dict of scalars, see
    ``config.hparams()``); ``jax.jit(jax.vmap(train))(keys)`` trains one seed per
    key in one compiled call.
    """
    from jaxrl_po.loop import make_train as make_loop_train

    return make_loop_train(make_algorithm(config))


__all__ = ["ConfigError", "GRPOConfig", "GRPOOptions", "PPOConfig", "TrainOutput", "make_algorithm", "make_train"]
