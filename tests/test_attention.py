"""Attention against the naive formula; grouped-query = multi-head with shared K/V; RoPE is relative."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tx_jax.models import attention, positions
from tx_jax.models.config import ModelConfig


def _naive(q, k, v, mask):
  """softmax(Q K^T / sqrt(d)) V per head, K/V heads repeated for grouped queries; k, v [b, kvh, len, d]."""
  b, lq, h, d = q.shape
  groups = h // k.shape[1]
  k = np.repeat(np.asarray(k), groups, axis=1)  # [b, h, lk, d]
  v = np.repeat(np.asarray(v), groups, axis=1)
  q = np.asarray(q).transpose(0, 2, 1, 3)  # [b, h, lq, d]
  scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
  if mask is not None:
    scores = np.where(np.broadcast_to(mask, scores.shape), scores, -1e30)
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return (weights @ v).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # multi-head, grouped-query, multi-query
@pytest.mark.parametrize("masked", [False, True])
def test_attention_equals_naive_formula(kv_heads, masked):
  rng = np.random.default_rng(kv_heads)
  q = jnp.asarray(rng.normal(size=(2, 5, 4, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(2, kv_heads, 7, 8)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(2, kv_heads, 7, 8)), jnp.float32)
  mask = None
  if masked:
    q_seg = jnp.array([[1, 1, 1, 2, 2], [1, 1, 1, 1, 1]])
    k_seg = jnp.array([[1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 0]])
    mask = attention.make_attention_mask(q_seg, k_seg, causal=True)
  np.testing.assert_allclose(attention.dot_product_attention(q, k, v, mask), _naive(q, k, v, mask), atol=1e-5)


def test_grouped_query_equals_multi_head_with_repeated_kv_weights():
  gqa_cfg = ModelConfig(vocab_size=10, emb_dim=32, num_heads=4, num_kv_heads=2)
  mha_cfg = ModelConfig(vocab_size=10, emb_dim=32, num_heads=4)
  gqa, mha = attention.Attention(gqa_cfg, rngs=nnx.Rngs(0)), attention.Attention(mha_cfg, rngs=nnx.Rngs(1))
  mha.query.kernel[...], mha.out.kernel[...] = gqa.query.kernel[...], gqa.out.kernel[...]
  for name in ("key", "value"):  # each of the 2 K/V heads serves 2 query heads
    kernel = getattr(gqa, name).kernel[...].reshape(32, 2, 8)
    getattr(mha, name).kernel[...] = jnp.repeat(kernel, 2, axis=1).reshape(32, 32)
  x = jax.random.normal(jax.random.key(0), (2, 6, 32))
  np.testing.assert_allclose(gqa(x)[0], mha(x)[0], atol=1e-5)


def test_equal_kv_heads_is_the_multi_head_path():
  cfg = ModelConfig(vocab_size=10, emb_dim=32, num_heads=4, num_kv_heads=4)
  a, b = attention.Attention(cfg, rngs=nnx.Rngs(0)), attention.Attention(
    ModelConfig(vocab_size=10, emb_dim=32, num_heads=4), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (1, 5, 32))
  np.testing.assert_allclose(a(x)[0], b(x)[0], atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)

  def score(pq, pk):
    rq = positions.apply_rope(q, jnp.array([[pq]]))
    rk = positions.apply_rope(k, jnp.array([[pk]]))
    return float(jnp.sum(rq * rk))

  assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-4)
  assert score(0, 0) == pytest.approx(score(40, 40), abs=1e-4)
  assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
