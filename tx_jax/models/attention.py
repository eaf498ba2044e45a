"""Scaled dot-product multi-head attention with grouped-query heads, masks and a KV cache."""

import jax
import jax.numpy as jnp
from flax import nnx

from tx_jax.models import config as config_lib
from tx_jax.models import dropout as dropout_lib
from tx_jax.models import matmul
from tx_jax.models import params
from tx_jax.models import positions as positions_lib


def make_attention_mask(query_segments, key_segments, causal=False):
  """Boolean mask [batch, 1, q_len, k_len]: same segment, key not padding, optionally causal.

  Segment id 0 marks padding; a model called without segment ids uses (tokens != pad_id).
  """
  mask = (query_segments[:, :, None] == key_segments[:, None, :]) & (key_segments[:, None, :] != 0)
  if causal:
    q_len, k_len = query_segments.shape[1], key_segments.shape[1]
    mask &= jnp.tril(jnp.ones((q_len, k_len), bool))[None]
  return mask[:, None]


# config.attention_impl: "xla" is dot_product_attention below (any mask, dropout, weights to sow);
# "dot_product_attention" is jax.nn.dot_product_attention (fused kernels on GPU) where no dropout applies.
ATTENTION_KERNELS = ("xla", "dot_product_attention")


def dot_product_attention(query, key, value, mask=None, *, dropout_rate=0.0, dropout_rng=None,
                          return_weights=False):
  """softmax(QK^T / sqrt(d) masked) V with grouped-query heads, on plain XLA ops.

  query: [batch, q_len, num_heads, head_dim]; key, value: [batch, kv_heads, k_len, head_dim] (the
  cache layout, so decoding reads the cache without transposing it);
  mask: bool, broadcastable to [batch, num_heads, q_len, k_len]. Returns [batch, q_len, num_heads, head_dim],
  or with `return_weights` (output, softmax weights before dropout [batch, num_heads, q_len, k_len] float32).
  """
  batch, q_len, num_heads, head_dim = query.shape
  kv_heads, k_len = key.shape[1], key.shape[2]
  groups = num_heads // kv_heads
  query = query.reshape(batch, q_len, kv_heads, groups, head_dim) / jnp.sqrt(head_dim).astype(query.dtype)
  # [batch, kv_heads, groups, q_len, k_len], in float32 for a stable softmax.
  logits = jnp.einsum("bqhgd,bhkd->bhgqk", query, key, preferred_element_type=jnp.float32)
  if mask is not None:
    mask = jnp.broadcast_to(mask, (batch, num_heads, q_len, k_len))
    mask = mask.reshape(batch, kv_heads, groups, q_len, k_len)
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1)
  weights = probs.astype(value.dtype)  # dropped out in the compute dtype
  if dropout_rate > 0.0 and dropout_rng is not None:
    weights = dropout_lib.dropout(weights, dropout_rate, dropout_rng)
  # A plain batched matmul [q_len, k_len] x [k_len, head_dim], then the small output is transposed:
  # XLA's CPU backend runs the form with a [batch, q_len, ...] output outside its matmul library (up to 3x slower).
  out = jnp.einsum("bhgqk,bhkd->bhgqd", weights, value)
  out = out.transpose(0, 3, 1, 2, 4).reshape(batch, q_len, num_heads, head_dim)
  if return_weights:  # query head kv * groups + g, as in the reshape of `query` above
    return out, probs.reshape(batch, num_heads, q_len, k_len)
  return out


def _stack_name(names):
  """The attribute that holds the stored stack of the projections `names`: ("key", "value") -> "key_value"."""
  return "_".join(names)


class Attention(nnx.Module):
  """Multi-head (or grouped-/multi-query) attention; self- or cross-attention."""

  def __init__(self, cfg: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, kvh, hd = cfg.emb_dim, cfg.num_heads, cfg.kv_heads, cfg.qkv_head_dim
    dense = lambda n_in, n_out, axes: params.dense(cfg, n_in, n_out, axes, rngs)
    self.query = dense(d, h * hd, (params.EMBED, params.HEADS))
    self.key = dense(d, kvh * hd, (params.EMBED, params.KV_HEADS))
    self.value = dense(d, kvh * hd, (params.EMBED, params.KV_HEADS))
    self.out = dense(h * hd, d, (params.HEADS, params.EMBED))
    self.sow_weights = False  # static; nnx.view(model, sow_weights=True) records the weights (attention_maps)

  def set_view(self, sow_weights: bool | None = None):
    """Used by `nnx.view`: with sow_weights, each call sows its weights as nnx.Intermediate 'attention_weights'."""
    if sow_weights is not None:
      self.sow_weights = sow_weights

  def _project(self, inputs, names, layout=None):
    """The projections `names` (of query, key, value) of the same inputs, as one matmul when several.

    With a `layout` (tx_jax.models.token_layout), inputs are its tokens and the projections come back as rows.
    """
    to_rows = layout.pad if layout is not None else lambda y: y
    if len(names) == 1:
      return [to_rows(getattr(self, names[0])(inputs))]
    stored = getattr(self, _stack_name(names), None)  # see store_stacked_kernels
    if stored is not None:
      y = stored(inputs)
    else:
      y = matmul.stacked_dense(inputs, [getattr(self, name) for name in names])  # [..., len(names), n_out]
    y = to_rows(y)  # one scatter for the stack
    return [y[..., i, :] for i in range(len(names))]

  def _query_with_key_value(self, self_attending: bool) -> bool:
    """Whether query, key and value come from one product (multi-head self-attention); else key and value do."""
    return self_attending and self.cfg.kv_heads == self.cfg.num_heads

  def store_stacked_kernels(self, self_attending: bool):
    """Replaces the projections `_project` multiplies by together with their stack (a `matmul.StackedDense`).

    For decoding: the stack is then written once per model, not in every call, and the separate
    projections, which nothing reads from then on, are dropped, so the module holds each weight once.
    Not for training: the module then has no separate projections to update.
    """
    names = ("query", "key", "value") if self._query_with_key_value(self_attending) else ("key", "value")
    stack = _stack_name(names)
    if hasattr(self, stack):  # stored before
      return
    setattr(self, stack, matmul.StackedDense([getattr(self, name) for name in names]))
    for name in names:
      delattr(self, name)

  def _kv_heads(self, k, v, positions):
    """Projected keys and values [batch, len, kv_heads * head_dim] -> the cache layout [batch, kv_heads, len, head_dim]."""
    b, n, _ = k.shape
    k = k.reshape(b, n, self.cfg.kv_heads, self.cfg.qkv_head_dim)
    v = v.reshape(b, n, self.cfg.kv_heads, self.cfg.qkv_head_dim)
    if self.cfg.positions == "rope" and positions is not None:
      k = positions_lib.apply_rope(k, positions, self.cfg.rope_theta)
    return k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

  def project_kv(self, inputs, positions=None, layout=None):
    """Keys and values [batch, kv_heads, len, head_dim] of `inputs` (cacheable for cross-attention).

    With a `layout`, inputs are its tokens [groups * capacity, emb].
    """
    return self._kv_heads(*self._project(inputs, ("key", "value"), layout), positions)

  def __call__(self, inputs, kv_inputs=None, mask=None, *, positions=None, kv_positions=None,
               cache=None, cache_index=None, layout=None, kv_layout=None, deterministic=True, rngs=None):
    """Attends from `inputs` [batch, q_len, emb] to `kv_inputs` (self-attention when None).

    With `cache` (dict of k, v: [batch, kv_heads, max_len, head_dim]) and `cache_index`, the new
    keys/values of a self-attention step are written at `cache_index` and the updated cache returned;
    a cross-attention cache (precomputed by `project_kv`) is read as is. Returns (output, cache).
    With a `layout` (and `kv_layout` for kv_inputs), inputs and output are its tokens [groups *
    capacity, emb]: the projections skip the padding, attention itself runs over rows.
    """
    cfg = self.cfg
    self_attending = kv_inputs is None and (cache is None or cache_index is not None)
    kv_layout = layout if self_attending else kv_layout
    if self._query_with_key_value(self_attending):
      q, k, v = self._project(inputs, ("query", "key", "value"), layout)
      k, v = self._kv_heads(k, v, positions)
    else:
      (q,) = self._project(inputs, ("query",), layout)
      if self_attending:
        k, v = self.project_kv(inputs, positions, layout)
      elif cache is not None:  # cross-attention over keys and values computed once (`project_kv`)
        k, v = cache["k"], cache["v"]
      else:
        k, v = self.project_kv(kv_inputs, kv_positions, kv_layout)
    b, n, _ = q.shape
    q = q.reshape(b, n, cfg.num_heads, cfg.qkv_head_dim)
    if cfg.positions == "rope" and positions is not None:
      q = positions_lib.apply_rope(q, positions, cfg.rope_theta)
    if self_attending and cache is not None:  # a decoding step: the new keys and values go into the cache
      k = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype), cache_index, axis=2)
      v = jax.lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype), cache_index, axis=2)
      cache = {"k": k, "v": v}
    dropout_rng = None
    if not deterministic and cfg.attention_dropout_rate > 0.0 and rngs is not None:
      dropout_rng = rngs.dropout()
    if self.sow_weights:  # collected with nnx.capture(..., nnx.Intermediate): [batch, heads, q_len, k_len]
      out, weights = dot_product_attention(q, k, v, mask, dropout_rate=cfg.attention_dropout_rate,
                                           dropout_rng=dropout_rng, return_weights=True)
      self.sow(nnx.Intermediate, "attention_weights", weights)
    elif cfg.attention_impl == "dot_product_attention" and dropout_rng is None:
      # jax's kernel takes one dtype: a CPU decoding cache is float32 under bfloat16 compute (Stack.empty_cache).
      k, v = k.astype(q.dtype), v.astype(q.dtype)
      out = jax.nn.dot_product_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask=mask)
    else:
      out = dot_product_attention(q, k, v, mask, dropout_rate=cfg.attention_dropout_rate,
                                  dropout_rng=dropout_rng)
    out = out.reshape(b, n, cfg.num_heads * cfg.qkv_head_dim)
    return self.out(layout.unpad(out) if layout is not None else out), cache
