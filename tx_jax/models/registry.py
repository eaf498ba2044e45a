"""Builds the model of a config's task's family from the shared blocks."""

import jax
from flax import nnx

from tx_jax import tasks
from tx_jax.models import config as config_lib
from tx_jax.models.decoder_only import DecoderOnly
from tx_jax.models.encoder_decoder import EncoderDecoder
from tx_jax.models.encoder_only import EncoderOnly

FAMILIES = {"encoder_decoder": EncoderDecoder, "decoder_only": DecoderOnly, "encoder_only": EncoderOnly}


def build_model(config, rngs: nnx.Rngs) -> nnx.Module:
  """The model of the config's task's family (tx_jax.tasks), built from its fields."""
  return FAMILIES[tasks.get(config).family](config_lib.ModelConfig.from_config(config), rngs=rngs)


def count_params(model_or_state) -> int:
  """Number of trainable parameters."""
  state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
  return sum(x.size for x in jax.tree.leaves(state))
