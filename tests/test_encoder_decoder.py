"""The encoder-decoder model: masks keep padding, future tokens and other segments out; cache = full pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tx_jax.inference import decode
from tx_jax.models.config import ModelConfig
from tx_jax.models.encoder_decoder import EncoderDecoder
from tx_jax.training.step import path_names

VOCAB = 50


def _model(**kw):
  cfg = dict(vocab_size=VOCAB, emb_dim=32, num_heads=4, mlp_dim=64, num_encoder_layers=2,
             num_decoder_layers=2, dropout_rate=0.0, attention_dropout_rate=0.0)
  cfg.update(kw)
  return EncoderDecoder(ModelConfig(**cfg), rngs=nnx.Rngs(0))


def _tokens(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).integers(4, VOCAB, shape), jnp.int32)


def test_future_target_tokens_do_not_change_earlier_outputs():
  model = _model()
  src, dec = _tokens(0, (2, 7)), _tokens(1, (2, 6))
  base = model(src, dec)
  changed = model(src, dec.at[:, 3:].set(_tokens(2, (2, 3))))
  np.testing.assert_allclose(base[:, :3], changed[:, :3], atol=1e-6)
  assert not np.allclose(base[:, 3:], changed[:, 3:], atol=1e-3)  # the change is visible later


def test_source_padding_does_not_leak():
  model = _model()
  src, dec = _tokens(0, (2, 8)), _tokens(1, (2, 5))
  segments = jnp.array([[1] * 5 + [0] * 3, [1] * 8])
  padded = src.at[0, 5:].set(0)
  junk = src.at[0, 5:].set(_tokens(3, (3,)))  # different tokens in positions marked as padding
  a = model(padded, dec, input_segments=segments)
  b = model(junk, dec, input_segments=segments)
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_packed_segments_equal_separate_sentences():
  model = _model()
  s1, s2, t1, t2 = _tokens(0, (1, 4)), _tokens(1, (1, 3)), _tokens(2, (1, 5)), _tokens(3, (1, 2))
  packed = model(jnp.concatenate([s1, s2], 1), jnp.concatenate([t1, t2], 1),
                 input_segments=jnp.array([[1, 1, 1, 1, 2, 2, 2]]),
                 target_segments=jnp.array([[1, 1, 1, 1, 1, 2, 2]]),
                 input_positions=jnp.array([[0, 1, 2, 3, 0, 1, 2]]),
                 target_positions=jnp.array([[0, 1, 2, 3, 4, 0, 1]]))
  np.testing.assert_allclose(packed[:, :5], model(s1, t1), atol=1e-5)
  np.testing.assert_allclose(packed[:, 5:], model(s2, t2), atol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"num_kv_heads": 2}, {"norm_position": "post"}, {"dtype": "bfloat16"},
                                {"attention_impl": "dot_product_attention"},
                                # jax's kernel under bf16 compute and the float32 CPU cache (it raised a dtype error)
                                {"attention_impl": "dot_product_attention", "dtype": "bfloat16"}])
def test_cached_decoding_equals_full_forward(kw):
  model = _model(**kw)
  src = _tokens(0, (3, 9)).at[1, 6:].set(0)
  segments = (src != 0).astype(jnp.int32)
  dec = _tokens(1, (3, 7))
  full = model(src, dec, input_segments=segments)
  cache = model.init_cache(model.encode(src, segments), max_decode_len=10)
  for i in range(dec.shape[1]):
    logits, cache = model.decode_step(dec[:, i], cache, i, segments)
    # bfloat16: the cache's attention weights stay float32 where the full pass rounds them (~0.5 % of a logit).
    atol = 5e-2 if kw.get("dtype") == "bfloat16" else 1e-5
    np.testing.assert_allclose(logits, full[:, i], atol=atol, err_msg=f"step {i}")


def _cached_logits(model, src, dec):
  """The logits [steps, batch, vocab] of cached decoding steps over target tokens `dec`."""
  segments = (src != 0).astype(jnp.int32)
  cache = model.init_cache(model.encode(src, segments), max_decode_len=dec.shape[1])
  out = []
  for i in range(dec.shape[1]):
    logits, cache = model.decode_step(dec[:, i], cache, i, segments, model.output_kernel())
    out.append(logits)
  return np.stack(out)


def _attention_projections(params):
  """The names of the attention modules' projections (plain or stacked) that hold a kernel in nnx params."""
  paths = [path_names(path) for path, _ in jax.tree.leaves_with_path(params)]
  return {p[p.index("kernel") - 1] for p in paths if "kernel" in p and any("attention" in str(k) for k in p)}


@pytest.mark.parametrize("kw", [{}, {"num_kv_heads": 2}, {"tie_output_embedding": False, "share_embeddings": False},
                                {"share_embeddings": False}, {"dtype": "bfloat16"}])
def test_stored_decoding_weights_give_the_same_translations_and_replace_their_sources(kw):
  graphdef, params = nnx.split(_model(**kw), nnx.Param)
  src = _tokens(0, (4, 6)).at[2, 4:].set(0)
  translate = lambda g, p, beam: np.asarray(decode.translate_batch(g, p, src, beam_size=beam, max_len=8, alpha=0.6))
  stored_graphdef, stored = decode.with_decoding_weights(graphdef, params)
  for beam in (1, 3):
    np.testing.assert_array_equal(translate(stored_graphdef, stored, beam), translate(graphdef, params, beam))
  dec = _tokens(1, (4, 5))
  np.testing.assert_allclose(_cached_logits(nnx.merge(stored_graphdef, stored), src, dec),
                             _cached_logits(nnx.merge(graphdef, params), src, dec), atol=1e-5)
  # The stacks replace their sources: no separate key or value projection is left (nor query where all three
  # are stacked), so what decodes above is the stacks; each weight is held once, plus a tied output's transpose.
  names = _attention_projections(stored)
  stacked_query = "num_kv_heads" not in kw
  assert names == ({"query_key_value", "key_value", "query", "out"} if stacked_query else {"key_value", "query", "out"})
  size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
  tied = kw.get("tie_output_embedding", True)
  table = nnx.merge(graphdef, params)._target_embedder.table.embedding
  assert size(stored) == size(params) + (table.size if tied else 0)
  # Under bfloat16 compute the matrices are stored in it (what each product casts them to); vectors stay float32.
  dtype = jnp.dtype(kw.get("dtype", "float32"))
  assert {(x.ndim >= 2, x.dtype) for x in jax.tree.leaves(stored)} == {(True, dtype), (False, jnp.dtype(jnp.float32))}
  # Preparing prepared params changes nothing.
  again_graphdef, again = decode.with_decoding_weights(stored_graphdef, stored)
  assert again_graphdef == stored_graphdef
  assert all(a is b for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(stored)))


@pytest.mark.parametrize("output_bias", [False, True])
def test_separate_tables_hold_one_output_projection(output_bias):
  """With its own target table, the source side carries no output kernel or bias: each would be trained for nothing."""
  size = lambda **kw: sum(x.size for x in jax.tree.leaves(nnx.state(_model(output_bias=output_bias, **kw), nnx.Param)))
  table = VOCAB * 32
  assert size(share_embeddings=False) == size() + table  # tied: one more token table
  assert size(share_embeddings=False, tie_output_embedding=False) == size(tie_output_embedding=False) + table
  model = _model(share_embeddings=False, tie_output_embedding=False, output_bias=output_bias)
  assert not hasattr(model.embedder, "output") and not hasattr(model.embedder, "output_bias")
  assert hasattr(model.target_embedder, "output") and hasattr(model.target_embedder, "output_bias") == output_bias


def test_beam_size_one_equals_greedy_and_beams_are_sorted():
  model = _model()
  graphdef, params = nnx.split(model, nnx.Param)
  src = _tokens(0, (4, 6))
  greedy = decode.translate_batch(graphdef, params, src, beam_size=1, max_len=8, alpha=0.6)
  segments = (src != 0).astype(jnp.int32)
  enc = model.encode(src, segments)
  step = lambda t, c, i: model.decode_step(t, c, i, segments)
  beam1, _ = decode.beam_search(step, model.init_cache(enc, 8), 4, 1, 8, alpha=0.6)
  np.testing.assert_array_equal(np.asarray(beam1[:, 0]), np.asarray(greedy))
  rep = jnp.repeat(segments, 4, axis=0)
  enc4 = model.encode(jnp.repeat(src, 4, axis=0), rep)
  step4 = lambda t, c, i: model.decode_step(t, c, i, rep)
  _, scores = decode.beam_search(step4, model.init_cache(enc4, 8), 4, 4, 8, alpha=0.6)
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 1e-6)
