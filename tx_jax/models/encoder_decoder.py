"""The encoder-decoder (translation) Transformer of "Attention Is All You Need"."""

import jax.numpy as jnp
from flax import nnx

from tx_jax.models import attention as attention_lib
from tx_jax.models import config as config_lib
from tx_jax.models import layers


class EncoderDecoder(nnx.Module):
  """Encoder over source tokens, causal decoder with cross-attention over the encoding."""

  def __init__(self, cfg: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embedder = layers.Embedder(cfg, rngs=rngs, with_output=cfg.share_embeddings)  # else the target's projects
    if not cfg.share_embeddings:
      self.target_embedder = layers.Embedder(cfg, rngs=rngs)
    self.encoder = layers.Stack(cfg, cfg.num_encoder_layers, cross_attention=False, rngs=rngs)
    self.decoder = layers.Stack(cfg, cfg.num_decoder_layers, cross_attention=True, rngs=rngs)

  @property
  def _target_embedder(self):
    return self.embedder if self.cfg.share_embeddings else self.target_embedder

  def encode(self, inputs, segments=None, positions=None, *, layout=None, deterministic=True, rngs=None):
    """Source tokens [batch, src_len] -> encoding [batch, src_len, emb_dim].

    With a `layout` (tx_jax.models.token_layout) of the sources, the encoding is its tokens
    [groups * capacity, emb_dim]: the position-wise layers skip the padding.
    """
    segments = (inputs != self.cfg.pad_id).astype(jnp.int32) if segments is None else segments
    positions = layers.default_positions(segments) if positions is None else positions
    x = self._embed(self.embedder, inputs, positions, layout, deterministic, rngs)
    mask = attention_lib.make_attention_mask(segments, segments)
    x, _ = self.encoder(x, mask, positions=positions, layout=layout, deterministic=deterministic, rngs=rngs)
    return x

  @staticmethod
  def _embed(embedder, tokens, positions, layout, deterministic, rngs):
    """Embeddings of tokens [batch, len] at positions [batch or 1, len], as rows or as `layout`'s tokens."""
    if layout is not None:
      tokens, positions = layout.unpad(tokens), layout.unpad(positions)
    return embedder(tokens, positions, deterministic=deterministic, rngs=rngs)

  def decode(self, decoder_inputs, encoded, input_segments, target_segments=None, target_positions=None,
             *, layout=None, encoded_layout=None, deterministic=True, rngs=None):
    """Teacher-forced decoder: shifted targets [batch, tgt_len] -> logits [batch, tgt_len, vocab] (float32).

    With a `layout` of the targets (and `encoded_layout`, that of `encoded`), the logits are its
    tokens' [groups * capacity, vocab].
    """
    if target_segments is None:  # unpacked: every target position is real (the loss masks padding)
      target_segments = jnp.ones_like(decoder_inputs, jnp.int32)
    positions = layers.default_positions(target_segments) if target_positions is None else target_positions
    x = self._embed(self._target_embedder, decoder_inputs, positions, layout, deterministic, rngs)
    self_mask = attention_lib.make_attention_mask(target_segments, target_segments, causal=True)
    cross_mask = attention_lib.make_attention_mask(target_segments, input_segments)
    x, _ = self.decoder(x, self_mask, positions=positions, encoded=encoded, cross_mask=cross_mask, layout=layout,
                        encoded_layout=encoded_layout, deterministic=deterministic, rngs=rngs)
    return self._target_embedder.logits(x)

  def __call__(self, inputs, decoder_inputs, *, input_segments=None, target_segments=None,
               input_positions=None, target_positions=None, input_layout=None, target_layout=None,
               deterministic=True, rngs=None):
    """Logits [batch, tgt_len, vocab] of the targets given sources (packed when segments are given).

    With layouts of the sources and the targets (tx_jax.models.token_layout), the logits are
    `target_layout`'s tokens' [groups * capacity, vocab]: no layer but attention computes on padding.
    """
    input_segments = (inputs != self.cfg.pad_id).astype(jnp.int32) if input_segments is None else input_segments
    encoded = self.encode(inputs, input_segments, input_positions, layout=input_layout,
                          deterministic=deterministic, rngs=rngs)
    return self.decode(decoder_inputs, encoded, input_segments, target_segments, target_positions,
                       layout=target_layout, encoded_layout=input_layout, deterministic=deterministic, rngs=rngs)

  def init_cache(self, encoded, max_decode_len: int, beam_size: int = 1):
    """Decoding state for `encoded` [batch, src_len, emb_dim]: per-layer KV caches and what each hypothesis sees.

    The beam_size hypotheses of a sentence are decoded in one row: each step appends their tokens as
    beam_size positions of that row. So every cache has one row per sentence (self-attention:
    max_decode_len * beam_size slots, written in place; cross-attention: the keys/values of
    `encoded`, read once for all the beams) and no cache is ever copied between beams. "visible"
    [batch * beam_size, max_decode_len * beam_size] marks the slots of each hypothesis's own prefix;
    it is the one leaf that beam search reorders.
    """
    batch = encoded.shape[0]
    layers = self.decoder.empty_cache(batch, max_decode_len * beam_size)
    for block, layer_cache in zip(self.decoder.blocks, layers):
      k, v = block.cross_attention.project_kv(encoded)
      layer_cache["cross"] = {"k": k, "v": v}
    return {"layers": layers, "visible": jnp.zeros((batch * beam_size, max_decode_len * beam_size), bool)}

  def grow_cache(self, cache, max_decode_len: int):
    """`cache` (from `init_cache`) with room for `max_decode_len` steps; the new slots are empty and unseen."""
    beams = cache["visible"].shape[0] // cache["layers"][0]["self"]["k"].shape[0]
    slots = max_decode_len * beams
    visible = jnp.pad(cache["visible"], ((0, 0), (0, slots - cache["visible"].shape[1])))
    return {"layers": self.decoder.grow_cache(cache["layers"], slots), "visible": visible}

  def output_kernel(self):
    """The output projection [emb_dim, vocab] for `decode_step`, computed once per decoding loop."""
    return self._target_embedder.output_kernel()

  def decode_step(self, tokens, cache, index, input_segments, output_kernel=None):
    """One decoding step: tokens [batch] at position `index` -> (logits [batch, vocab], cache).

    With beams (`init_cache(..., beam_size)`), tokens are [sentences * beam_size] with a sentence's
    beams consecutive, and input_segments [sentences, src_len]. output_kernel: `self.output_kernel()`.
    """
    rows = input_segments.shape[0]
    beams = tokens.shape[0] // rows
    # Step `index` of hypothesis j of a sentence goes to slot index * beams + j of the sentence's row.
    slot = index * beams + jnp.arange(tokens.shape[0]) % beams
    visible = cache["visible"] | (jnp.arange(cache["visible"].shape[1]) == slot[:, None])
    positions = jnp.full((1, beams), index)  # the same for every sentence
    x = self._target_embedder(tokens.reshape(rows, beams), positions)
    self_mask = visible.reshape(rows, 1, beams, -1)  # [rows, 1, queries = beams, slots]
    cross_mask = (input_segments != 0)[:, None, None, :]
    x, layers = self.decoder(x, self_mask, positions=positions, cross_mask=cross_mask, cache=cache["layers"],
                             cache_index=index * beams)
    logits = self._target_embedder.logits(x, output_kernel)
    return logits.reshape(tokens.shape[0], -1), {"layers": layers, "visible": visible}
