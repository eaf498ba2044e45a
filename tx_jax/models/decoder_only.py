"""The decoder-only (GPT- or Llama-style) causal language model."""

import jax.numpy as jnp
from flax import nnx

from tx_jax.models import attention as attention_lib
from tx_jax.models import config as config_lib
from tx_jax.models import layers
from tx_jax.models.encoder_decoder import default_positions


class DecoderOnly(nnx.Module):
  """Token embeddings, causal self-attention blocks, output projection (tied or not)."""

  def __init__(self, cfg: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embedder = layers.Embedder(cfg, rngs=rngs)
    self.layers = nnx.List(
      [layers.Block(cfg, cross_attention=False, rngs=rngs) for _ in range(cfg.num_decoder_layers)])
    if cfg.has_final_norm:
      self.final_norm = layers.make_norm(cfg, rngs)

  def _logits(self, x):
    return self.embedder.logits(self.final_norm(x) if self.cfg.has_final_norm else x)

  def __call__(self, tokens, *, segments=None, positions=None, deterministic=True, rngs=None):
    """Next-token logits [batch, len, vocab] (float32) of tokens [batch, len]; packed when segments given."""
    segments = jnp.ones_like(tokens, jnp.int32) if segments is None else segments
    positions = default_positions(segments) if positions is None else positions
    x = self.embedder(tokens, positions, deterministic=deterministic, rngs=rngs)
    mask = attention_lib.make_attention_mask(segments, segments, causal=True)
    for block in self.layers:
      x, _ = block(x, mask, positions=positions, deterministic=deterministic, rngs=rngs)
    return self._logits(x)

  def init_cache(self, batch_size: int, max_decode_len: int):
    """Empty per-layer self-attention KV cache [batch, kv_heads, max_decode_len, head_dim]."""
    shape = (batch_size, self.cfg.kv_heads, max_decode_len, self.cfg.qkv_head_dim)
    return [{"self": {"k": jnp.zeros(shape, self.cfg.compute_dtype), "v": jnp.zeros(shape, self.cfg.compute_dtype)}}
            for _ in self.layers]

  def decode_step(self, tokens, cache, index):
    """One step: tokens [batch] at position `index` -> (logits [batch, vocab], cache)."""
    tokens = tokens[:, None]
    positions = jnp.full_like(tokens, index)
    x = self.embedder(tokens, positions)
    mask = (jnp.arange(cache[0]["self"]["k"].shape[2]) <= index)[None, None, None, :]
    new_cache = []
    for block, layer_cache in zip(self.layers, cache):
      x, layer_cache = block(x, mask, positions=positions, cache=layer_cache, cache_index=index)
      new_cache.append(layer_cache)
    return self._logits(x)[:, 0], new_cache
