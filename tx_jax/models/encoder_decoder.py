"""The encoder-decoder (translation) Transformer of "Attention Is All You Need"."""

import jax.numpy as jnp
from flax import nnx

from tx_jax.models import attention as attention_lib
from tx_jax.models import config as config_lib
from tx_jax.models import layers


def default_positions(segments):
  """Positions 0..len-1 for every row, for unpacked batches."""
  return jnp.broadcast_to(jnp.arange(segments.shape[1]), segments.shape)


class EncoderDecoder(nnx.Module):
  """Encoder over source tokens, causal decoder with cross-attention over the encoding."""

  def __init__(self, cfg: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embedder = layers.Embedder(cfg, rngs=rngs)
    if not cfg.share_embeddings:
      self.target_embedder = layers.Embedder(cfg, rngs=rngs)
    self.encoder_layers = nnx.List(
      [layers.Block(cfg, cross_attention=False, rngs=rngs) for _ in range(cfg.num_encoder_layers)])
    self.decoder_layers = nnx.List(
      [layers.Block(cfg, cross_attention=True, rngs=rngs) for _ in range(cfg.num_decoder_layers)])
    if cfg.has_final_norm:
      self.encoder_norm = layers.make_norm(cfg, rngs)
      self.decoder_norm = layers.make_norm(cfg, rngs)

  @property
  def _target_embedder(self):
    return self.embedder if self.cfg.share_embeddings else self.target_embedder

  def encode(self, inputs, segments=None, positions=None, *, deterministic=True, rngs=None):
    """Source tokens [batch, src_len] -> encoding [batch, src_len, emb_dim]."""
    segments = (inputs != 0).astype(jnp.int32) if segments is None else segments
    positions = default_positions(segments) if positions is None else positions
    x = self.embedder(inputs, positions, deterministic=deterministic, rngs=rngs)
    mask = attention_lib.make_attention_mask(segments, segments)
    for block in self.encoder_layers:
      x, _ = block(x, mask, positions=positions, deterministic=deterministic, rngs=rngs)
    return self.encoder_norm(x) if self.cfg.has_final_norm else x

  def decode(self, decoder_inputs, encoded, input_segments, target_segments=None, target_positions=None,
             *, deterministic=True, rngs=None):
    """Teacher-forced decoder: shifted targets [batch, tgt_len] -> logits [batch, tgt_len, vocab] (float32)."""
    if target_segments is None:  # unpacked: every position up to the last non-pad token is real
      target_segments = jnp.ones_like(decoder_inputs, jnp.int32)
    positions = default_positions(target_segments) if target_positions is None else target_positions
    x = self._target_embedder(decoder_inputs, positions, deterministic=deterministic, rngs=rngs)
    self_mask = attention_lib.make_attention_mask(target_segments, target_segments, causal=True)
    cross_mask = attention_lib.make_attention_mask(target_segments, input_segments)
    for block in self.decoder_layers:
      x, _ = block(x, self_mask, positions=positions, encoded=encoded, cross_mask=cross_mask,
                   deterministic=deterministic, rngs=rngs)
    return self._logits(x)

  def _logits(self, x):
    if self.cfg.has_final_norm:
      x = self.decoder_norm(x)
    return self._target_embedder.logits(x)

  def __call__(self, inputs, decoder_inputs, *, input_segments=None, target_segments=None,
               input_positions=None, target_positions=None, deterministic=True, rngs=None):
    """Logits [batch, tgt_len, vocab] of the targets given sources (packed when segments are given)."""
    input_segments = (inputs != 0).astype(jnp.int32) if input_segments is None else input_segments
    encoded = self.encode(inputs, input_segments, input_positions, deterministic=deterministic, rngs=rngs)
    return self.decode(decoder_inputs, encoded, input_segments, target_segments, target_positions,
                       deterministic=deterministic, rngs=rngs)

  def init_cache(self, encoded, max_decode_len: int):
    """Per-layer KV cache: empty self-attention slots and the cross-attention keys/values of `encoded`."""
    batch = encoded.shape[0]
    shape = (batch, self.cfg.kv_heads, max_decode_len, self.cfg.qkv_head_dim)
    cache = []
    for block in self.decoder_layers:
      k, v = block.cross_attention.project_kv(encoded)
      cache.append({"self": {"k": jnp.zeros(shape, self.cfg.compute_dtype),
                             "v": jnp.zeros(shape, self.cfg.compute_dtype)},
                    "cross": {"k": k, "v": v}})
    return cache

  def decode_step(self, tokens, cache, index, input_segments):
    """One decoding step: tokens [batch] at position `index` -> (logits [batch, vocab], cache)."""
    tokens = tokens[:, None]
    positions = jnp.full_like(tokens, index)
    x = self._target_embedder(tokens, positions)
    max_len = cache[0]["self"]["k"].shape[2]
    self_mask = (jnp.arange(max_len) <= index)[None, None, None, :]
    cross_mask = (input_segments != 0)[:, None, None, :]
    new_cache = []
    for block, layer_cache in zip(self.decoder_layers, cache):
      x, layer_cache = block(x, self_mask, positions=positions, encoded=None, cross_mask=cross_mask,
                             cache=layer_cache, cache_index=index)
      new_cache.append(layer_cache)
    return self._logits(x)[:, 0], new_cache
