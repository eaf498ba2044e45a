"""The encoder-only (BERT-style) model: masked-LM logits and sequence classification."""

import jax.numpy as jnp
from flax import nnx

from tx_jax.models import attention as attention_lib
from tx_jax.models import config as config_lib
from tx_jax.models import dropout as dropout_lib
from tx_jax.models import layers
from tx_jax.models import params


class EncoderOnly(nnx.Module):
  """Bidirectional self-attention blocks; optional [CLS] pooler and classification head."""

  def __init__(self, cfg: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embedder = layers.Embedder(cfg, rngs=rngs)
    self.encoder = layers.Stack(cfg, cfg.num_encoder_layers, cross_attention=False, rngs=rngs)
    if cfg.mlm_head:  # BERT's prediction-head transform, between the encoder and the output projection
      self.mlm_transform = params.dense(cfg, cfg.emb_dim, cfg.emb_dim, (params.EMBED, params.MLP), rngs)
      self.mlm_norm = layers.make_norm(cfg, rngs)
    if cfg.pooler:
      self.pooler = params.dense(cfg, cfg.emb_dim, cfg.emb_dim, (params.EMBED, params.MLP), rngs)
    if cfg.num_classes:
      self.classifier = params.dense(cfg, cfg.emb_dim, cfg.num_classes, (params.EMBED, None), rngs)
      self.classifier_dropout = dropout_lib.Dropout(cfg.dropout_rate)

  def encode(self, tokens, *, segments=None, positions=None, token_types=None, layout=None, deterministic=True,
             rngs=None):
    """Hidden states [batch, len, emb_dim] of tokens [batch, len] (pad_id = padding unless segments given).

    With a `layout` (tx_jax.models.token_layout) of the tokens, the states are its tokens'
    [groups * capacity, emb_dim]: the position-wise layers skip the padding.
    """
    segments = (tokens != self.cfg.pad_id).astype(jnp.int32) if segments is None else segments
    positions = layers.default_positions(segments) if positions is None else positions
    embedded = (tokens, positions, token_types)
    if layout is not None:
      embedded = [None if a is None else layout.unpad(a) for a in embedded]
    x = self.embedder(*embedded, deterministic=deterministic, rngs=rngs)
    mask = attention_lib.make_attention_mask(segments, segments)
    x, _ = self.encoder(x, mask, positions=positions, layout=layout, deterministic=deterministic, rngs=rngs)
    return x

  def __call__(self, tokens, **kw):
    """Masked-LM logits [batch, len, vocab] (float32) over the token table."""
    x = self.encode(tokens, **kw)
    if self.cfg.mlm_head:
      x = self.mlm_norm(layers.ACTIVATIONS[self.cfg.activation](self.mlm_transform(x)))
    return self.embedder.logits(x)

  def classify(self, tokens, *, layout=None, deterministic=True, rngs=None, **kw):
    """Class logits [batch, num_classes] (float32) from the first token's (pooled) state."""
    x = self.encode(tokens, layout=layout, deterministic=deterministic, rngs=rngs, **kw)
    first = (x if layout is None else layout.pad(x))[:, 0]  # [batch, emb_dim]
    if self.cfg.pooler:
      first = jnp.tanh(self.pooler(first))
    first = self.classifier_dropout(first, deterministic=deterministic, rngs=rngs)
    return self.classifier(first).astype(jnp.float32)
