"""Sampling: top-k = 1 is greedy, top-p keeps the smallest set reaching p, seeds repeat."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tx_jax.inference import decode
from tx_jax.models.config import ModelConfig
from tx_jax.models.decoder_only import DecoderOnly


def _lm_step():
  model = DecoderOnly(ModelConfig(vocab_size=30, emb_dim=32, num_heads=4, mlp_dim=64, num_decoder_layers=2,
                                  dropout_rate=0.0, attention_dropout_rate=0.0), rngs=nnx.Rngs(0))
  return model, (lambda t, c, i: model.decode_step(t, c, i))


def test_top_k_one_sampling_equals_greedy():
  model, step = _lm_step()
  greedy, _ = decode.greedy(step, model.init_cache(3, 12), 3, 12)
  sampled, _ = decode.sample(step, model.init_cache(3, 12), 3, 12, jax.random.key(7), temperature=1.3, top_k=1)
  np.testing.assert_array_equal(sampled, greedy)


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
  probs = jnp.array([[0.05, 0.4, 0.3, 0.15, 0.1]])
  kept = np.isfinite(np.asarray(decode.filter_logits(jnp.log(probs), top_p=0.8)))
  np.testing.assert_array_equal(kept, [[False, True, True, True, False]])  # 0.4+0.3 < 0.8 <= +0.15
  kept = np.isfinite(np.asarray(decode.filter_logits(jnp.log(probs), top_p=0.65)))
  np.testing.assert_array_equal(kept, [[False, True, True, False, False]])  # 0.4 < 0.65 <= 0.4+0.3
  kept = np.isfinite(np.asarray(decode.filter_logits(jnp.log(probs), top_k=2)))
  np.testing.assert_array_equal(kept, [[False, True, True, False, False]])


def test_top_p_counts_the_mass_of_the_distribution_sampled_from():
  log_probs = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
  # At temperature 0.5 the sampled distribution is p^2 normalised: 0.658, 0.237, 0.105; 0.658 < 0.8 <= 0.895.
  tempered = jax.nn.log_softmax(log_probs / 0.5)
  np.testing.assert_array_equal(np.isfinite(decode.filter_logits(tempered, top_p=0.8)), [[True, True, False]])
  # At temperature 2, sqrt(p) normalised: 0.415, 0.322, 0.263; 0.415 + 0.322 < 0.8: all three stay.
  tempered = jax.nn.log_softmax(log_probs / 2.0)
  np.testing.assert_array_equal(np.isfinite(decode.filter_logits(tempered, top_p=0.8)), [[True, True, True]])
  # Unnormalised input (logits, or what top-k kept) gives the same set as its normalised form:
  # after top-k=2 the kept pair is 0.625, 0.375, so top-p 0.6 keeps only the first (the raw masses
  # e^-3 x 0.5 and e^-3 x 0.3 would keep both).
  np.testing.assert_array_equal(np.isfinite(decode.filter_logits(log_probs - 3.0, top_k=2, top_p=0.6)),
                                [[True, False, False]])


def test_sampling_at_a_temperature_draws_from_the_tempered_top_p_set():
  vocab_probs = jnp.log(jnp.array([0.5, 0.3, 0.2]))
  step = lambda tokens, cache, i: (jnp.broadcast_to(vocab_probs, (tokens.shape[0], 3)), cache)
  # Token 2 holds 0.105 of the tempered mass at T=0.5: top-p 0.8 never draws it (it did when the mass was p^2).
  out, _ = decode.sample(step, {}, 256, 4, jax.random.key(0), temperature=0.5, top_p=0.8, eos_id=99)
  assert set(np.unique(np.asarray(out))) == {0, 1}


def test_sampling_is_seeded():
  model, step = _lm_step()
  a, _ = decode.sample(step, model.init_cache(2, 10), 2, 10, jax.random.key(1))
  b, _ = decode.sample(step, model.init_cache(2, 10), 2, 10, jax.random.key(1))
  c, _ = decode.sample(step, model.init_cache(2, 10), 2, 10, jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
