"""Beam search on random models: hypotheses sorted by their length-penalised score, never worse than greedy.

Every score is recomputed with one teacher-forced forward pass of the model, so the test also checks
that the cached decoding loop scores what the model says. The random models get a fixed bonus on
the EOS logit (in decoding and in rescoring alike) so that most hypotheses end within MAX_LEN.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tx_jax.inference import decode
from tx_jax.data import tokenizer
from tx_jax.models.config import ModelConfig
from tx_jax.models.decoder_only import DecoderOnly
from tx_jax.models.encoder_decoder import EncoderDecoder

VOCAB, BATCH, BEAM, MAX_LEN, ALPHA, EOS_BONUS = 12, 4, 4, 8, 0.6, 2.5
EOS = tokenizer.EOS_ID


def _model(seed):
  cfg = ModelConfig(vocab_size=VOCAB, emb_dim=32, num_heads=4, mlp_dim=64, num_encoder_layers=2,
                    num_decoder_layers=2, dropout_rate=0.0, attention_dropout_rate=0.0)
  return EncoderDecoder(cfg, rngs=nnx.Rngs(seed))


def _bonus():
  return jnp.zeros((VOCAB,)).at[EOS].set(EOS_BONUS)


def _sources(seed):
  """Random sources [BATCH, 6]: ordinary tokens then EOS; every other row one token shorter (padded)."""
  src = np.random.default_rng(seed).integers(tokenizer.BOS_ID + 1, VOCAB, size=(BATCH, 6)).astype(np.int32)
  src[:, -1] = EOS
  src[::2, -2:] = [EOS, 0]
  return jnp.asarray(src)


def _search(model, src, beam_size, shared=False):
  """Beam search (beam_size 1: greedy) with the EOS bonus; returns (sequences, scores) as numpy.

  shared=False repeats each source once per beam, so every hypothesis has its own cache row;
  shared=True is tx_jax.inference.decode.translate_batch's layout: one encoding and one cache row per sentence.
  """
  segments = (src != 0).astype(jnp.int32)
  if beam_size > 1 and not shared:
    src, segments = jnp.repeat(src, beam_size, axis=0), jnp.repeat(segments, beam_size, axis=0)
  cache = model.init_cache(model.encode(src, segments), MAX_LEN, beam_size if shared else 1)

  def step_fn(tokens, cache, i):
    logits, cache = model.decode_step(tokens, cache, i, segments)
    return logits + _bonus(), cache

  if beam_size > 1:
    seqs, scores = decode.beam_search(step_fn, cache, BATCH, beam_size, MAX_LEN, ALPHA)
  else:
    seqs, scores = decode.greedy(step_fn, cache, BATCH, MAX_LEN)
  return np.asarray(seqs), np.asarray(scores)


def _penalised_scores(model, src, seqs):
  """Sum of log p(token) up to and including the first EOS (else all MAX_LEN), / length_penalty.

  src [n, src_len], seqs [n, MAX_LEN] -> [n]; one causal forward pass scores every prefix at once.
  """
  has_eos = (seqs == EOS).any(axis=1)
  lengths = np.where(has_eos, (seqs == EOS).argmax(axis=1) + 1, MAX_LEN)  # [n]
  decoder_inputs = np.concatenate([np.full((len(seqs), 1), tokenizer.BOS_ID), seqs[:, :-1]], axis=1)
  log_probs = jax.nn.log_softmax(model(src, jnp.asarray(decoder_inputs, jnp.int32)) + _bonus())  # [n, len, vocab]
  token_lp = np.take_along_axis(np.asarray(log_probs), seqs[:, :, None], axis=-1)[..., 0]  # [n, MAX_LEN]
  total = np.where(np.arange(MAX_LEN)[None] < lengths[:, None], token_lp, 0.0).sum(axis=1)
  return total / np.asarray(decode.length_penalty(lengths, ALPHA))


def test_beam_is_sorted_by_its_penalised_score_and_never_worse_than_greedy():
  compared = 0
  for seed in range(6):
    model, src = _model(seed), _sources(seed)
    beams, beam_scores = _search(model, src, BEAM)  # [b, k, max_len], [b, k]
    greedy, _ = _search(model, src, 1)  # [b, max_len]
    assert beams.shape == (BATCH, BEAM, MAX_LEN) and beam_scores.shape == (BATCH, BEAM)
    rescored = _penalised_scores(model, jnp.repeat(src, BEAM, axis=0), beams.reshape(BATCH * BEAM, MAX_LEN))
    rescored = rescored.reshape(BATCH, BEAM)
    greedy_scores = _penalised_scores(model, src, greedy)
    for row in range(BATCH):
      assert np.all(np.diff(beam_scores[row]) <= 1e-6), beam_scores[row]  # best first
      filled = beam_scores[row] > decode.NEG_INF / 2  # slots no finished hypothesis reached keep NEG_INF
      assert filled[0]
      np.testing.assert_allclose(beam_scores[row, filled], rescored[row, filled], atol=1e-4)
      finished = (beams[row][filled] == EOS).any(axis=1)
      if finished.any():  # a finished hypothesis outranks every unfinished one
        assert finished[0]
      if (greedy[row] == EOS).any():  # greedy's hypothesis is a finished one: beam must do at least as well
        assert beam_scores[row, 0] >= greedy_scores[row] - 1e-4, (seed, row, beam_scores[row], greedy_scores[row])
        compared += 1
  assert compared >= 8  # of 24 rows; with EOS_BONUS most greedy hypotheses end within MAX_LEN


def test_beams_sharing_a_sentence_row_search_as_beams_with_rows_of_their_own():
  """The shared cache (one row per sentence, beams told apart by a visibility mask) changes nothing."""
  for seed in range(6):
    model, src = _model(seed), _sources(seed)
    own_seqs, own_scores = _search(model, src, BEAM)
    shared_seqs, shared_scores = _search(model, src, BEAM, shared=True)
    np.testing.assert_array_equal(shared_seqs, own_seqs, err_msg=f"seed {seed}")
    np.testing.assert_allclose(shared_scores, own_scores, atol=1e-5, err_msg=f"seed {seed}")


def test_decoding_in_stages_equals_one_loop():
  """Growing the cache stage by stage (as translate_batch and generate do) changes no token and no score."""
  max_len = 40
  assert decode.stage_lengths(max_len) == [16, 32, 40]
  # Sentence r is made to end at step ENDS[r] (in the first, second, third stage; never), so that the
  # loop carries finished and unfinished rows across stage boundaries.
  ends = jnp.array([5, 20, 35, max_len])

  def force_eos(logits, i):
    rows = jnp.repeat(ends, logits.shape[0] // BATCH)
    return logits + jnp.where(rows == i, 50.0, 0.0)[:, None] * jax.nn.one_hot(EOS, VOCAB)

  for seed in range(3):
    model, src = _model(seed), _sources(seed)
    segments = (src != 0).astype(jnp.int32)
    encoded = model.encode(src, segments)
    kernel = model.output_kernel()  # the staged runs use it, the one-loop runs the table itself
    for beam in (1, BEAM):
      def step(t, c, i, grown):
        logits, c = model.decode_step(t, c, i, segments, kernel if grown else None)
        return force_eos(logits, i), c
      def search(c, grow, beam=beam):
        f = functools.partial(step, grown=grow is not None)
        if beam == 1:
          return decode.greedy(f, c, BATCH, max_len, grow=grow)
        return decode.beam_search(f, c, BATCH, beam, max_len, ALPHA, grow=grow)
      seqs, scores = search(model.init_cache(encoded, 16, beam), model.grow_cache)
      seqs_one, scores_one = search(model.init_cache(encoded, max_len, beam), None)
      np.testing.assert_array_equal(seqs, seqs_one, err_msg=f"seed {seed}, beam {beam}")
      np.testing.assert_allclose(scores, scores_one, atol=1e-5, err_msg=f"seed {seed}, beam {beam}")
      if beam == 1:
        seqs = np.asarray(seqs)
        np.testing.assert_array_equal(np.where((seqs == EOS).any(1), (seqs == EOS).argmax(1), max_len), ends)
  lm = DecoderOnly(ModelConfig(vocab_size=VOCAB, emb_dim=32, num_heads=4, mlp_dim=64, num_decoder_layers=2,
                               positions="rope", dropout_rate=0.0, attention_dropout_rate=0.0), rngs=nnx.Rngs(0))
  step = lambda t, c, i: lm.decode_step(t, c, i, lm.output_kernel())
  seqs, scores = decode.greedy(step, lm.init_cache(BATCH, 16), BATCH, max_len, grow=lm.grow_cache)
  seqs_one, scores_one = decode.greedy(step, lm.init_cache(BATCH, max_len), BATCH, max_len)
  np.testing.assert_array_equal(seqs, seqs_one)
  np.testing.assert_allclose(scores, scores_one, atol=1e-5)
