"""Inference reads the parameters alone: a workdir without optimizer state serves every tool and init_from."""

import json

import jax
import numpy as np

from conftest import make_tiny_config
from tx_jax import evaluate, parallel, train, translate
from tx_jax.interop import workdir as workdir_lib
from tx_jax.training import checkpoint, experiment


def test_parameter_only_restore_equals_the_full_one_and_needs_no_optimizer_state(small_corpus_dir, vocab_dir,
                                                                                 tmp_path):
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=4)
  trained = str(tmp_path / "trained")
  train.train_and_evaluate(config, trained)
  mesh = parallel.make_mesh(config.mesh_shape)
  _, abstract, _, _ = experiment.build(config, mesh, abstract_only=True)
  full, _ = checkpoint.restore(checkpoint.make_manager(trained, read_only=True), abstract)
  params, step = checkpoint.restore_params(trained, abstract.params)
  assert step == 4
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(full.params)):
    np.testing.assert_array_equal(x, y)

  # The same parameters in a workdir whose checkpoint holds no optimizer state (as imported models are).
  bare = str(tmp_path / "bare")
  workdir_lib.write_workdir(bare, json.loads(config.to_json_best_effort()), jax.device_get(full.params))
  lines = ["Klicken Sie auf OK.", "Wählen Sie eine Datei."]
  assert translate.translate_lines(bare, lines, beam_size=2) == translate.translate_lines(trained, lines, beam_size=2)
  a = evaluate.evaluate(config, bare, split="test", max_sentences=4)
  b = evaluate.evaluate(config, trained, split="test", max_sentences=4)
  assert a["metrics"]["test/loss"] == b["metrics"]["test/loss"] and a["bleu"] == b["bleu"]
  # Fine-tuning starts from it with init_from (its own optimizer), not by resuming it.
  tuned = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=2, init_from=bare)
  assert "train/loss" in train.train_and_evaluate(tuned, str(tmp_path / "tuned"))
