"""Ensembles of translation workdirs: one model and a model with itself decode exactly as the model alone."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import make_tiny_config
from tx_jax import errors, evaluate, train, translate
from tx_jax.inference import decode, restore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_corpus_dir, vocab_dir):
  """Two tiny translation runs with different seeds, sharing the test vocabulary."""
  out = []
  for seed in (0, 1):
    config = make_tiny_config(small_corpus_dir, vocab_dir, seed=seed, num_train_steps=8)
    workdir = str(tmp_path_factory.mktemp(f"seed{seed}"))
    train.train_and_evaluate(config, workdir)
    out.append((config, workdir))
  return out


def _sources(config, n=12):
  with open(os.path.join(config.data_dir, "test.de"), encoding="utf-8") as f:
    return f.read().split("\n")[:n]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_ensemble_of_one_and_of_a_model_with_itself_decode_as_the_model(runs, beam_size):
  config, workdir = runs[0]
  _, graphdef, params, processor = restore.restore_for_inference(workdir)
  kw = dict(batch_size=8, beam_size=beam_size, alpha=0.6, max_predict_length=24, max_source_length=64)
  texts = _sources(config)
  alone = decode.translate_texts(graphdef, params, processor, texts, **kw)
  assert decode.translate_texts((graphdef,), (params,), processor, texts, **kw) == alone
  assert decode.translate_texts((graphdef, graphdef), (params, params), processor, texts, **kw) == alone


def test_two_models_decode_together_and_are_scored(runs):
  (config, a), (_, b) = runs
  texts = _sources(config)
  both = translate.translate_lines([a, b], texts + [""], beam_size=2, batch_size=8)
  assert len(both) == len(texts) + 1 and both[-1] == ""
  summary = evaluate.evaluate_ensemble(config, [a, b], split="test", max_sentences=8)
  assert summary["ensemble"] == [a, b] and summary["sentences"] == 8
  assert os.path.exists(os.path.join(a, "eval", "test_ensemble2_first8.json"))  # 8 of the split: kept apart
  assert "ensemble of 2" in evaluate.report(summary)
  # The ensemble's step averages the two models' log-probabilities.
  _, graphdefs, params, processor = restore.restore_ensemble([a, b])
  assert isinstance(graphdefs, tuple) and len(params) == 2
  result = subprocess.run([sys.executable, "-m", "tx_jax.translate", f"--workdir={a},{b}", "--beam_size=2"],
                          input="\n".join(texts[:2]) + "\n", cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split("\n")[:-1] == both[:2]


def test_ensemble_step_is_the_mean_of_log_probabilities():
  import jax
  import jax.numpy as jnp
  logits = [jnp.array([[2.0, 0.5, -1.0]]), jnp.array([[0.0, 1.0, 3.0]])]
  fns = [lambda tokens, cache, i, l=l: (l, cache) for l in logits]
  out, caches = decode.ensemble_step(fns)(jnp.zeros((1,), jnp.int32), ("c0", "c1"), 0)
  expected = (jax.nn.log_softmax(logits[0]) + jax.nn.log_softmax(logits[1])) / 2
  np.testing.assert_allclose(out, expected, rtol=1e-6)
  assert caches == ("c0", "c1")


def test_workdirs_with_other_vocabularies_are_refused(runs, small_corpus_dir, tmp_path):
  config, a = runs[0]
  other = make_tiny_config(small_corpus_dir, str(tmp_path), num_train_steps=2, vocab_size=400)
  b = str(tmp_path / "other_vocab")
  train.train_and_evaluate(other, b)
  with pytest.raises(errors.ConfigError, match="uses another vocabulary"):
    restore.restore_ensemble([a, b])
  with pytest.raises(errors.ConfigError, match="an ensemble uses each workdir's newest"):
    restore.restore_ensemble([a, a], step=8)
