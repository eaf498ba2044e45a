"""The decoder-only (GPT- or Llama-style) causal language model."""

import jax.numpy as jnp
from flax import nnx

from tx_jax.models import attention as attention_lib
from tx_jax.models import config as config_lib
from tx_jax.models import layers


class DecoderOnly(nnx.Module):
  """Token embeddings, causal self-attention blocks, output projection (tied or not)."""

  def __init__(self, cfg: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embedder = layers.Embedder(cfg, rngs=rngs)
    self.decoder = layers.Stack(cfg, cfg.num_decoder_layers, cross_attention=False, rngs=rngs)

  def __call__(self, tokens, *, segments=None, positions=None, deterministic=True, rngs=None):
    """Next-token logits [batch, len, vocab] (float32) of tokens [batch, len]; packed when segments given."""
    segments = jnp.ones_like(tokens, jnp.int32) if segments is None else segments
    positions = layers.default_positions(segments) if positions is None else positions
    x = self.embedder(tokens, positions, deterministic=deterministic, rngs=rngs)
    mask = attention_lib.make_attention_mask(segments, segments, causal=True)
    x, _ = self.decoder(x, mask, positions=positions, deterministic=deterministic, rngs=rngs)
    return self.embedder.logits(x)

  def init_cache(self, batch_size: int, max_decode_len: int):
    """Empty per-layer self-attention KV cache."""
    return self.decoder.empty_cache(batch_size, max_decode_len)

  def grow_cache(self, cache, max_decode_len: int):
    """`cache` (from `init_cache`) with room for `max_decode_len` positions; the new slots are empty."""
    return self.decoder.grow_cache(cache, max_decode_len)

  def output_kernel(self):
    """The output projection [emb_dim, vocab] for `decode_step`, computed once per decoding loop."""
    return self.embedder.output_kernel()

  def decode_step(self, tokens, cache, index, output_kernel=None):
    """One step: tokens [batch] at position `index` -> (logits [batch, vocab], cache); see `output_kernel`."""
    positions = jnp.full((1, 1), index)  # the same for every row
    x = self.embedder(tokens[:, None], positions)
    mask = (jnp.arange(cache[0]["self"]["k"].shape[2]) <= index)[None, None, None, :]
    x, cache = self.decoder(x, mask, positions=positions, cache=cache, cache_index=index)
    return self.embedder.logits(x, output_kernel)[:, 0], cache
