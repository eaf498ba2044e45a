"""Decoder-only language modelling through the same trainer: real run, perplexity vs unigram baseline."""

import math

import numpy as np
import pytest

from conftest import make_tiny_config
from tx_jax import configuration, errors, evaluate, generate, train
from tx_jax.training import evaluation


def test_lm_trains_and_evaluates_with_unigram_baseline(small_corpus_dir, vocab_dir, tmp_path):
  config = make_tiny_config(small_corpus_dir, vocab_dir, task="lm",
                            source_language="", target_language="en", num_predict_sentences=0,
                            num_encoder_layers=0, positions="rope", norm="rmsnorm", activation="swiglu")
  config.vocab_path = str(tmp_path / "lm.model")
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert "eval/bleu" not in summary and math.isfinite(summary["eval/perplexity"])
  result = evaluate.evaluate(config, str(tmp_path / "run"), split="test")
  metrics = result["metrics"]
  assert math.isfinite(metrics["test/perplexity"]) and metrics["test/unigram_perplexity"] > 1.0
  # A token spans at least one byte, so bits per byte are below log2(per-token perplexity).
  assert 0.0 < metrics["test/bits_per_byte"] < math.log2(metrics["test/perplexity"])
  samples = generate.generate(str(tmp_path / "run"), "The", num_samples=2, max_new_tokens=5, top_k=5, seed=1)
  assert len(samples) == 2 and all(isinstance(s, str) for s in samples)
  greedy = generate.generate(str(tmp_path / "run"), "The", num_samples=2, max_new_tokens=5, temperature=0)
  assert greedy[0] == greedy[1]


def test_unigram_perplexity_by_hand():
  train_examples = np.array([5, 5, 6, 1, 5, 1])  # the tokens of two texts, EOS (1) included
  eval_examples = np.array([5, 6])
  # counts + 1 over a vocabulary of 8: token 5 -> 4, token 6 -> 2, total 6 + 8 = 14.
  expected = math.exp(-(math.log(4 / 14) + math.log(2 / 14)) / 2)
  assert evaluation.unigram_perplexity(train_examples, eval_examples, 8) == pytest.approx(expected)


def test_encoder_only_family_cannot_be_trained_on_translation(small_corpus_dir, vocab_dir):
  config = make_tiny_config(small_corpus_dir, vocab_dir, model_family="encoder_only")
  with pytest.raises(errors.ConfigError, match="config.model_family"):
    configuration.validate(config)
