"""Shared Transformer blocks: embeddings, norms, feed-forward and the residual block."""

import jax
import jax.numpy as jnp
from flax import nnx

from tx_jax.models import attention as attention_lib
from tx_jax.models import config as config_lib
from tx_jax.models import dropout as dropout_lib
from tx_jax.models import matmul
from tx_jax.models import params
from tx_jax.models import positions as positions_lib


def make_norm(cfg: config_lib.ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
  """LayerNorm or RMSNorm over the model width, as the config says."""
  if cfg.norm == "rmsnorm":
    return nnx.RMSNorm(cfg.emb_dim, epsilon=cfg.norm_epsilon, dtype=cfg.compute_dtype, rngs=rngs,
                       scale_metadata=params.partition_metadata((params.EMBED,)))
  return nnx.LayerNorm(cfg.emb_dim, epsilon=cfg.norm_epsilon, dtype=cfg.compute_dtype, rngs=rngs,
                       use_bias=cfg.use_bias, scale_metadata=params.partition_metadata((params.EMBED,)),
                       bias_metadata=params.partition_metadata((params.EMBED,)))


# Activations of the non-gated feed-forward (and BERT's MLM head); "swiglu" is the gated silu of FeedForward.
ACTIVATIONS = {
  "relu": jax.nn.relu,
  "gelu": jax.nn.gelu,  # tanh approximation (GPT-2's gelu_new)
  "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),  # erf (BERT's gelu)
  "silu": jax.nn.silu,  # also called swish (Marian)
}


def default_positions(segments):
  """Positions [1, len] = 0..len-1, shared by every row of an unpacked batch [batch, len].

  One row, broadcast where it is used: the position embedding is then computed once, not per row.
  """
  return jnp.arange(segments.shape[1])[None]


class Embedder(nnx.Module):
  """Token (+ position, + token type) embeddings, and the output projection back to the vocabulary.

  `with_output=False`: the embeddings alone, no untied output kernel or output bias (an
  encoder-decoder's source side when its target has a table of its own).
  """

  def __init__(self, cfg: config_lib.ModelConfig, *, rngs: nnx.Rngs, with_output: bool = True):
    self.cfg = cfg
    self.with_output = with_output
    self.table = nnx.Embed(
      cfg.vocab_size, cfg.emb_dim, dtype=cfg.compute_dtype, rngs=rngs,
      embedding_init=params.partitioned(nnx.initializers.normal(cfg.emb_dim ** -0.5),
                                        (params.VOCAB, params.EMBED)))
    if cfg.positions == "learned":
      self.position_table = nnx.Embed(
        cfg.max_len, cfg.emb_dim, dtype=cfg.compute_dtype, rngs=rngs,
        embedding_init=params.partitioned(nnx.initializers.normal(0.02), (None, params.EMBED)))
    if cfg.num_token_types:
      self.token_type_table = nnx.Embed(
        cfg.num_token_types, cfg.emb_dim, dtype=cfg.compute_dtype, rngs=rngs,
        embedding_init=params.partitioned(nnx.initializers.normal(0.02), (None, params.EMBED)))
    if cfg.embedding_norm:
      self.norm = make_norm(cfg, rngs)
    if with_output and not cfg.tie_output_embedding:
      self.output = matmul.Dense(cfg.emb_dim, cfg.vocab_size, use_bias=False, dtype=cfg.compute_dtype, rngs=rngs,
                               kernel_init=params.partitioned(nnx.initializers.xavier_uniform(),
                                                              (params.EMBED, params.VOCAB)))
    if with_output and cfg.output_bias:
      self.output_bias = nnx.Param(jnp.zeros((cfg.vocab_size,)), **params.partition_metadata((params.VOCAB,)))
    self.dropout = dropout_lib.Dropout(cfg.dropout_rate)

  def __call__(self, tokens, positions, token_types=None, *, deterministic=True, rngs=None):
    """Embeds tokens [batch, len] at integer positions [batch or 1, len] -> [batch, len, emb_dim]."""
    x = self.table(tokens)
    if self.cfg.scale_embeddings:
      x = x * jnp.sqrt(self.cfg.emb_dim).astype(x.dtype)
    if self.cfg.positions == "sinusoidal":
      x = x + positions_lib.sinusoidal(positions, self.cfg.emb_dim,
                                       timescales=self.cfg.sinusoidal_timescales).astype(x.dtype)
    elif self.cfg.positions == "learned":
      x = x + self.position_table(positions)
    if self.cfg.num_token_types:
      x = x + self.token_type_table(jnp.zeros_like(tokens) if token_types is None else token_types)
    if self.cfg.embedding_norm:
      x = self.norm(x)
    return self.dropout(x, deterministic=deterministic, rngs=rngs)

  def logits(self, x, output_kernel=None):
    """Output logits [batch, len, vocab] (float32) from hidden states [batch, len, emb_dim].

    output_kernel: `self.output_kernel()` computed once before a decoding loop, if any.
    """
    if output_kernel is not None:
      logits = matmul.mixed_dot(x, output_kernel, x.dtype)  # float32 logits; bf16 operands on the bf16 units
    elif self.cfg.tie_output_embedding:  # x [.., emb] . table [vocab, emb], its gradient in the table's layout
      logits = matmul.mixed_dot(x, self.table.embedding[...], x.dtype, True)
    else:
      logits = self.output(x)
    logits = logits.astype(jnp.float32) * self.cfg.logits_scale
    return logits + self.output_bias[...] if self.cfg.output_bias else logits

  def output_kernel(self):
    """The output projection as [emb_dim, vocab] in memory, for decoding loops.

    A tied table is [vocab, emb_dim]; XLA:CPU multiplies a few rows by it ~25 % slower than by
    its transpose, so a decoding loop transposes it once, before its first step (or reads the
    transpose that `store_decoding_weights` stored).
    """
    stored = getattr(self, "stored_output_kernel", None)
    if stored is not None:
      return stored[...]
    if self.cfg.tie_output_embedding:
      return self.table.embedding[...].T
    return self.output.kernel[...]

  def store_decoding_weights(self):
    """Stores the tied table's transpose for `output_kernel` (for decoding only: it does not follow training)."""
    if self.with_output and self.cfg.tie_output_embedding and getattr(self, "stored_output_kernel", None) is None:
      self.stored_output_kernel = nnx.Param(self.table.embedding[...].T)  # [emb_dim, vocab]


class FeedForward(nnx.Module):
  """Position-wise MLP: one of ACTIVATIONS, or the gated SwiGLU."""

  def __init__(self, cfg: config_lib.ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dense = lambda n_in, n_out, axes: params.dense(cfg, n_in, n_out, axes, rngs)
    self.wi = dense(cfg.emb_dim, cfg.mlp_dim, (params.EMBED, params.MLP))
    if cfg.activation == "swiglu":
      self.wi_gate = dense(cfg.emb_dim, cfg.mlp_dim, (params.EMBED, params.MLP))
    self.wo = dense(cfg.mlp_dim, cfg.emb_dim, (params.MLP, params.EMBED))

  def __call__(self, x):
    """[batch, len, emb_dim] -> [batch, len, emb_dim]."""
    h = self.wi(x)
    if self.cfg.activation == "swiglu":
      h = jax.nn.silu(self.wi_gate(x)) * h
    else:
      h = ACTIVATIONS[self.cfg.activation](h)
    return self.wo(h)


class Block(nnx.Module):
  """One Transformer layer: self-attention, optional cross-attention, feed-forward; pre- or post-norm."""

  def __init__(self, cfg: config_lib.ModelConfig, *, cross_attention: bool, rngs: nnx.Rngs):
    self.cfg = cfg
    self.self_attention = attention_lib.Attention(cfg, rngs=rngs)
    self.self_attention_norm = make_norm(cfg, rngs)
    if cross_attention:
      self.cross_attention = attention_lib.Attention(cfg, rngs=rngs)
      self.cross_attention_norm = make_norm(cfg, rngs)
    self.has_cross_attention = cross_attention
    self.feed_forward = FeedForward(cfg, rngs=rngs)
    self.feed_forward_norm = make_norm(cfg, rngs)
    self.dropout = dropout_lib.Dropout(cfg.dropout_rate)

  def store_decoding_weights(self):
    """Replaces the attention's projections with the stacks that decoding reads (see `Attention.store_stacked_kernels`)."""
    self.self_attention.store_stacked_kernels(self_attending=True)
    if self.has_cross_attention:
      self.cross_attention.store_stacked_kernels(self_attending=False)

  def _residual(self, x, norm, sublayer, deterministic, rngs):
    """x + dropout(sublayer(norm(x))) for pre-norm, norm(x + dropout(sublayer(x))) for post-norm."""
    pre = self.cfg.norm_position == "pre"
    y, aux = sublayer(norm(x) if pre else x)
    x = x + self.dropout(y, deterministic=deterministic, rngs=rngs)
    return (x if pre else norm(x)), aux

  def __call__(self, x, self_mask, *, positions=None, encoded=None, cross_mask=None,
               cache=None, cache_index=None, layout=None, encoded_layout=None, deterministic=True, rngs=None):
    """x: [batch, len, emb_dim]. Returns (x, cache) where cache holds this layer's updated KV cache.

    With a `layout` (tx_jax.models.token_layout), x is its tokens [groups * capacity, emb_dim], and
    `encoded` those of `encoded_layout`.
    """
    kw = dict(deterministic=deterministic, rngs=rngs)
    cache = cache or {}
    x, self_cache = self._residual(
      x, self.self_attention_norm,
      lambda h: self.self_attention(h, mask=self_mask, positions=positions, cache=cache.get("self"),
                                    cache_index=cache_index, layout=layout, **kw), deterministic, rngs)
    new_cache = {"self": self_cache} if self_cache is not None else {}
    if self.has_cross_attention:
      x, cross_cache = self._residual(
        x, self.cross_attention_norm,
        lambda h: self.cross_attention(h, encoded, mask=cross_mask, cache=cache.get("cross"), layout=layout,
                                       kv_layout=encoded_layout, **kw),
        deterministic, rngs)
      if cross_cache is not None:
        new_cache["cross"] = cross_cache
    x, _ = self._residual(x, self.feed_forward_norm, lambda h: (self.feed_forward(h), None),
                          deterministic, rngs)
    return x, new_cache


class Stack(nnx.Module):
  """`num_layers` Blocks, then a final norm where the config wants one: the body of every family."""

  def __init__(self, cfg: config_lib.ModelConfig, num_layers: int, *, cross_attention: bool, rngs: nnx.Rngs):
    self.cfg = cfg
    self.blocks = nnx.List([Block(cfg, cross_attention=cross_attention, rngs=rngs) for _ in range(num_layers)])
    if cfg.has_final_norm:
      self.final_norm = make_norm(cfg, rngs)

  def __call__(self, x, mask, *, positions=None, encoded=None, cross_mask=None, cache=None, cache_index=None,
               layout=None, encoded_layout=None, deterministic=True, rngs=None):
    """x: [batch, len, emb_dim] (or a `layout`'s tokens, see Block) -> (x, per-layer caches or None)."""
    new_cache = []
    layouts = (layout, encoded_layout)
    if cache is None:
      def run(block, x, mask, positions, encoded, cross_mask, layouts, rngs):
        return block(x, mask, positions=positions, encoded=encoded, cross_mask=cross_mask, layout=layouts[0],
                     encoded_layout=layouts[1], deterministic=deterministic, rngs=rngs)[0]
      if self.cfg.remat_mode != "none":  # keep what the policy saves (full: block inputs); recompute the rest
        run = nnx.remat(run, policy=config_lib.REMAT_POLICIES[self.cfg.remat_mode])
      if self.cfg.scan_layers and not self.blocks[0].self_attention.sow_weights:
        x = self._scan_blocks(x, mask, positions, encoded, cross_mask, layouts, deterministic, rngs)
      else:
        for block in self.blocks:
          x = run(block, x, mask, positions, encoded, cross_mask, layouts, rngs)
    else:  # incremental decoding
      for block, layer_cache in zip(self.blocks, cache):
        x, layer_cache = block(x, mask, positions=positions, encoded=encoded, cross_mask=cross_mask, cache=layer_cache,
                               cache_index=cache_index)
        new_cache.append(layer_cache)
    x = self.final_norm(x) if self.cfg.has_final_norm else x
    return x, (new_cache if cache is not None else None)

  def _scan_blocks(self, x, mask, positions, encoded, cross_mask, layouts, deterministic, rngs):
    """The blocks as one jax.lax.scan: XLA compiles a single block however deep the stack is.

    The parameters stay one pytree per block (so checkpoints are the same with or without scan)
    and are stacked to [num_layers, ...] inside the step; the stacking's copy is the price of that.
    Dropout keys are split per layer, so with dropout on the random draws differ from the loop's.
    """
    graphdef, first = nnx.split(self.blocks[0])
    stacked = jax.tree.map(lambda *layer: jnp.stack(layer), first, *[nnx.state(b) for b in self.blocks[1:]])
    keys = jax.random.split(rngs.dropout(), len(self.blocks)) if rngs is not None and not deterministic else None

    def body(x, layer):
      state, key = layer
      block = nnx.merge(graphdef, state)
      layer_rngs = nnx.Rngs(dropout=key) if key is not None else None
      return block(x, mask, positions=positions, encoded=encoded, cross_mask=cross_mask, layout=layouts[0],
                   encoded_layout=layouts[1], deterministic=deterministic, rngs=layer_rngs)[0], None

    if self.cfg.remat_mode != "none":
      body = jax.checkpoint(body, policy=config_lib.REMAT_POLICIES[self.cfg.remat_mode])
    x, _ = jax.lax.scan(body, x, (stacked, keys))
    return x

  def empty_cache(self, batch_size: int, max_decode_len: int):
    """Zeroed self-attention KV caches, one per layer: k, v [batch, kv_heads, max_decode_len, head_dim].

    In the compute dtype, except on CPU, where they are float32 whatever it is: XLA:CPU's attention dots
    take float32 operands, so a bfloat16 cache was converted whole at every step, and each step's write
    into it rewrote it whole (experiments/README.md, twentieth pass). The values written are the compute
    dtype's either way.
    """
    shape = (batch_size, self.cfg.kv_heads, max_decode_len, self.cfg.qkv_head_dim)
    dtype = jnp.float32 if jax.default_backend() == "cpu" else self.cfg.compute_dtype
    return [{"self": {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}} for _ in self.blocks]

  @staticmethod
  def grow_cache(cache, slots: int):
    """Per-layer caches whose self-attention k, v get empty slots at the end, up to `slots` in all."""
    grow = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, slots - x.shape[2]), (0, 0)))
    return [{**layer, "self": jax.tree.map(grow, layer["self"])} for layer in cache]
