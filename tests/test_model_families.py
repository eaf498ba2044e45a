"""The three families on shared blocks: published parameter counts, causality, switches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import bert_base, gpt2_small, llama_small
from tx_jax.models import attention, registry
from tx_jax.models.config import ModelConfig
from tx_jax.models.decoder_only import DecoderOnly
from tx_jax.models.encoder_only import EncoderOnly


def _abstract_count(config):
  return registry.count_params(nnx.eval_shape(lambda: registry.build_model(config, nnx.Rngs(0))))


def test_gpt2_small_has_the_published_parameter_count():
  assert _abstract_count(gpt2_small.get_config()) == 124_439_808


def test_bert_base_has_the_published_parameter_count():
  assert _abstract_count(bert_base.get_config()) == 109_482_240


def test_llama_small_uses_grouped_query_rope_rmsnorm_swiglu():
  model = nnx.eval_shape(lambda: registry.build_model(llama_small.get_config(), nnx.Rngs(0)))
  attn = model.decoder.blocks[0].self_attention
  assert attn.key.kernel.shape == (512, 2 * 64) and attn.query.kernel.shape == (512, 8 * 64)
  assert attn.query.bias is None and isinstance(model.decoder.final_norm, nnx.RMSNorm)
  assert hasattr(model.decoder.blocks[0].feed_forward, "wi_gate") and hasattr(model.embedder, "output")


def _small(**kw):
  cfg = dict(vocab_size=40, emb_dim=32, num_heads=4, mlp_dim=64, num_encoder_layers=2, num_decoder_layers=2,
             dropout_rate=0.0, attention_dropout_rate=0.0, max_len=32)
  cfg.update(kw)
  return ModelConfig(**cfg)


@pytest.mark.parametrize("kw", [{}, {"positions": "rope", "norm": "rmsnorm", "activation": "swiglu",
                                     "num_kv_heads": 2, "use_bias": False, "tie_output_embedding": False},
                                    {"positions": "learned", "norm_position": "post", "activation": "gelu"}])
def test_decoder_only_gets_no_gradient_from_future_tokens(kw):
  model = DecoderOnly(_small(**kw), rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  x = jax.random.normal(jax.random.key(1), (1, 8, 32))

  def output_at(inputs, t):  # run the blocks on embeddings so the gradient w.r.t. inputs is defined
    m = nnx.merge(graphdef, state)
    seg = jnp.ones((1, 8), jnp.int32)
    mask = attention.make_attention_mask(seg, seg, causal=True)
    pos = jnp.arange(8)[None]
    h, _ = m.decoder(inputs, mask, positions=pos)
    return h[0, t].sum()

  for t in (0, 3, 6):
    grad = jax.grad(output_at)(x, t)
    assert np.all(np.asarray(grad[0, t + 1:]) == 0.0), t
    assert np.any(np.asarray(grad[0, :t + 1]) != 0.0), t


def test_decoder_only_cache_matches_full_pass():
  model = DecoderOnly(_small(positions="rope", num_kv_heads=1), rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 40, (2, 9)), jnp.int32)
  full = model(tokens)
  cache = model.init_cache(2, 12)
  for i in range(9):
    logits, cache = model.decode_step(tokens[:, i], cache, i)
    np.testing.assert_allclose(logits, full[:, i], atol=1e-5)


def test_encoder_only_mlm_and_classification_shapes_and_padding():
  model = EncoderOnly(_small(num_token_types=2, embedding_norm=True, norm_position="post", pooler=True,
                             num_classes=3), rngs=nnx.Rngs(0))
  tokens = jnp.array([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
  assert model(tokens).shape == (2, 5, 40)
  logits = model.classify(tokens)
  assert logits.shape == (2, 3)
  junk = tokens.at[0, 3:].set(jnp.array([20, 21]))
  segments = jnp.array([[1, 1, 1, 0, 0], [1] * 5])
  np.testing.assert_allclose(model.classify(junk, segments=segments), logits, atol=1e-6)


def _loss_and_grads(model_cls, cfg, *inputs):
  graphdef, state = nnx.split(model_cls(cfg, rngs=nnx.Rngs(0)))
  targets = inputs[-1]

  def loss(state):
    logits = nnx.merge(graphdef, state)(*inputs[:-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))

  return jax.value_and_grad(loss)(state)


@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only"])
def test_remat_gives_the_same_loss_and_gradients(family):
  from tx_jax.models.encoder_decoder import EncoderDecoder
  rng = np.random.default_rng(0)
  tok = lambda: jnp.asarray(rng.integers(1, 40, (2, 6)), jnp.int32)
  cls, inputs = ((EncoderDecoder, (tok(), tok(), tok())) if family == "encoder_decoder"
                 else (DecoderOnly, (tok(), tok())))
  plain_loss, plain_grads = _loss_and_grads(cls, _small(), *inputs)
  remat_loss, remat_grads = _loss_and_grads(cls, _small(remat=True), *inputs)
  np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(plain_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_compute_keeps_the_float32_loss_within_one_percent():
  rng = np.random.default_rng(0)
  tokens, targets = (jnp.asarray(rng.integers(1, 40, (4, 16)), jnp.int32) for _ in range(2))
  loss32, _ = _loss_and_grads(DecoderOnly, _small(), tokens, targets)
  loss16, grads16 = _loss_and_grads(DecoderOnly, _small(dtype="bfloat16"), tokens, targets)
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))  # parameters stay float32
  assert abs(float(loss16) - float(loss32)) <= 0.01 * float(loss32)  # measured: 0.025 %


@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only", "encoder_only"])
@pytest.mark.parametrize("remat", [False, True])
def test_scan_over_layers_gives_the_same_loss_and_gradients(family, remat):
  from tx_jax.models.encoder_decoder import EncoderDecoder
  rng = np.random.default_rng(1)
  tok = lambda: jnp.asarray(rng.integers(1, 40, (2, 6)), jnp.int32)
  cls, inputs = {"encoder_decoder": (EncoderDecoder, (tok(), tok(), tok())),
                 "decoder_only": (DecoderOnly, (tok(), tok())),
                 "encoder_only": (EncoderOnly, (tok(), tok()))}[family]
  cfg = dict(num_encoder_layers=3, num_decoder_layers=3, positions="rope", remat=remat)
  plain_loss, plain_grads = _loss_and_grads(cls, _small(**cfg), *inputs)
  scan_loss, scan_grads = _loss_and_grads(cls, _small(scan_layers=True, **cfg), *inputs)
  np.testing.assert_allclose(scan_loss, plain_loss, rtol=1e-6)
  assert jax.tree.structure(scan_grads) == jax.tree.structure(plain_grads)  # same parameter layout
  for a, b in zip(jax.tree.leaves(scan_grads), jax.tree.leaves(plain_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
