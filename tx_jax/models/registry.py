"""Builds the model of a config's `model_family` from the shared blocks."""

import jax
from flax import nnx

from tx_jax import errors
from tx_jax.models import config as config_lib
from tx_jax.models.decoder_only import DecoderOnly
from tx_jax.models.encoder_decoder import EncoderDecoder
from tx_jax.models.encoder_only import EncoderOnly

FAMILIES = {"encoder_decoder": EncoderDecoder, "decoder_only": DecoderOnly, "encoder_only": EncoderOnly}


def build_model(config, rngs: nnx.Rngs) -> nnx.Module:
  """The model named by config.model_family (default encoder_decoder), built from its fields."""
  family = config.get("model_family", "encoder_decoder")
  if family not in FAMILIES:
    raise errors.ConfigError(f"config.model_family={family!r} is unknown; use one of {tuple(FAMILIES)}.")
  return FAMILIES[family](config_lib.ModelConfig.from_config(config), rngs=rngs)


def count_params(model_or_state) -> int:
  """Number of trainable parameters."""
  state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
  return sum(x.size for x in jax.tree.leaves(state))
