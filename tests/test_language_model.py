"""Decoder-only language modelling through the same trainer: real run, perplexity vs unigram baseline."""

import math
import re

import jax
import numpy as np
import pytest
from flax import nnx

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
  # Past the model's positions a one-line error, not NaN logits decoded into ids past the vocabulary.
  with pytest.raises(errors.ConfigError, match=rf"pass the model's config.max_len={config.max_len} positions"):
    generate.generate(str(tmp_path / "run"), "The", max_new_tokens=config.max_len, temperature=0)


@pytest.mark.parametrize("setting, text", [(dict(temperature=-1.0), "--temperature=-1.0 must be >= 0"),
                                           (dict(top_p=0.0), "--top_p=0.0 must be in (0, 1]"),
                                           (dict(top_k=-2), "--top_k=-2 must be >= 0"),
                                           (dict(num_samples=0), "--num_samples=0 must be at least 1"),
                                           (dict(max_new_tokens=0), "--max_new_tokens=0 must be at least 1")])
def test_sampling_settings_out_of_range_are_one_error(setting, text):
  settings = dict(num_samples=1, max_new_tokens=4, temperature=1.0, top_k=0, top_p=1.0) | setting
  with pytest.raises(errors.ConfigError, match=re.escape(text)):
    generate.check_sampling(**settings)


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


def test_export_of_a_run_with_an_ema_writes_the_ema_the_tools_score(small_corpus_dir, vocab_dir, tmp_path):
  from tx_jax import export_hf, import_hf, parallel
  from tx_jax.interop import workdir as workdir_lib
  from tx_jax.training import experiment
  config = make_tiny_config(small_corpus_dir, vocab_dir, task="lm", source_language="", target_language="en",
                            num_predict_sentences=0, num_encoder_layers=0, num_train_steps=4, eval_every_steps=4,
                            positions="learned", activation="gelu", scale_embeddings=False, ema_decay=0.9)
  config.vocab_path = str(tmp_path / "lm.model")  # GPT-2's switches: it exports as a GPT2LMHeadModel
  run = str(tmp_path / "run")
  train.train_and_evaluate(config, run)
  mesh = parallel.make_mesh((-1, 1, 1))
  for use_ema in (True, False):
    out, back = str(tmp_path / f"hf_{use_ema}"), str(tmp_path / f"back_{use_ema}")
    assert export_hf.export_workdir(run, out, use_ema=use_ema) == "GPT2LMHeadModel"
    import_hf.import_dir(out, back)  # exact both ways (tests/test_interop.py): the exported values, read back
    exported = jax.tree.leaves(workdir_lib.read_workdir(back)[1])
    scored = jax.tree.leaves(nnx.to_pure_dict(experiment.restore_model(run, config, mesh, use_ema=use_ema)[1]))
    assert len(exported) == len(scored) and all(np.array_equal(a, b) for a, b in zip(exported, scored)), use_ema
  raw, averaged = (workdir_lib.read_workdir(run, use_ema=e)[1] for e in (False, True))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(raw), jax.tree.leaves(averaged)))
