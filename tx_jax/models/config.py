"""The frozen model config every block is built from."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


# config.remat_policy -> the jax.checkpoint policy of each block (None: save only the block's inputs).
# "none" stores every activation; "full" and "nothing_saveable" recompute the whole block in the
# backward pass; "dots_saveable" keeps every matmul output and recomputes the cheap elementwise ops;
# "dots_with_no_batch_dims_saveable" keeps the projections' outputs but recomputes attention scores.
REMAT_POLICIES = {
  "none": None,
  "full": None,
  "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
  "dots_saveable": jax.checkpoint_policies.dots_saveable,
  "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture switches shared by the three Transformer families."""

  vocab_size: int
  emb_dim: int = 512
  num_heads: int = 8
  num_kv_heads: int | None = None  # None: same as num_heads (multi-head); 1: multi-query
  head_dim: int | None = None  # None: emb_dim // num_heads
  mlp_dim: int = 2048
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  max_len: int = 256  # longest position the model supports (learned positions, KV cache)
  positions: str = "sinusoidal"  # sinusoidal | learned | rope | none
  # sinusoidal frequencies 1 / max_timescale ** (i / n): "tensor2tensor" n = dim/2 - 1, "marian" n = dim/2
  # (Hugging Face Marian's table); both put the sines in the first half and the cosines in the second.
  sinusoidal_timescales: str = "tensor2tensor"
  rope_theta: float = 10000.0
  norm: str = "layernorm"  # layernorm | rmsnorm
  norm_position: str = "pre"  # pre | post
  norm_epsilon: float = 1e-6
  activation: str = "relu"  # relu | gelu (tanh approximation) | gelu_exact (erf) | silu | swiglu (gated silu)
  use_bias: bool = True
  dropout_rate: float = 0.1  # embeddings and residual branches
  attention_dropout_rate: float = 0.1  # attention weights
  share_embeddings: bool = True  # encoder-decoder: one table for source and target tokens
  tie_output_embedding: bool = True  # output projection = transposed token table (else its own matrix)
  output_bias: bool = False  # a learned [vocab] bias added to the output logits (BERT's MLM head, Marian)
  logits_scale: float = 1.0  # multiplies the output logits (e.g. emb_dim ** -0.5)
  scale_embeddings: bool = True  # multiply embeddings by sqrt(emb_dim), as in the paper
  num_token_types: int = 0  # > 0: BERT-style segment (token type) embeddings
  embedding_norm: bool = False  # normalise the summed embeddings (BERT)
  final_norm: bool | None = None  # norm after the last block; None: only for pre-norm stacks
  pooler: bool = False  # encoder-only: tanh dense layer over the first token (BERT's [CLS] pooler)
  mlm_head: bool = False  # encoder-only: BERT's dense + activation + norm transform before the output projection
  num_classes: int = 0  # encoder-only: > 0 adds a classification head over the pooled first token
  pad_id: int = 0  # padding token: unpacked inputs without segments are masked where tokens == pad_id
  dtype: str = "float32"  # compute dtype; parameters are always float32
  remat: bool = False  # rematerialise each block in the backward pass (less memory, ~1/3 more compute)
  remat_policy: str = "none"  # what a block saves for the backward pass (REMAT_POLICIES); "none" + remat=True: full
  scan_layers: bool = False  # run the blocks as one jax.lax.scan (compile time independent of depth)
  attention_impl: str = "xla"  # xla (plain einsum path) | dot_product_attention (jax.nn; fused on GPU)

  @property
  def kv_heads(self) -> int:
    """Number of key/value heads (grouped-query attention when < num_heads)."""
    return self.num_kv_heads or self.num_heads

  @property
  def qkv_head_dim(self) -> int:
    """Width of one attention head."""
    return self.head_dim or self.emb_dim // self.num_heads

  @property
  def has_final_norm(self) -> bool:
    """Whether a stack ends with a norm (pre-norm stacks need one; post-norm blocks end with one)."""
    return self.norm_position == "pre" if self.final_norm is None else self.final_norm

  @property
  def remat_mode(self) -> str:
    """The effective REMAT_POLICIES key: remat_policy, or "full" for the older remat=True."""
    return "full" if self.remat_policy == "none" and self.remat else self.remat_policy

  @property
  def compute_dtype(self) -> Any:
    """The jnp dtype activations are computed in."""
    return jnp.dtype(self.dtype)

  @classmethod
  def from_config(cls, config) -> "ModelConfig":
    """Picks the model fields out of a flat ml_collections training config."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in config.items() if k in names})
