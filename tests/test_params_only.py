"""Inference reads the parameters alone: a workdir without optimizer state serves every tool and init_from."""

import json
import os
import shutil

import grain.checkpoint
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import make_tiny_config
from tx_jax import errors, evaluate, parallel, train, translate
from tx_jax.interop import workdir as workdir_lib
from tx_jax.training import checkpoint, ema, experiment, run_vocab


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
  assert _items(bare, 0) == {"params"}
  assert _items(trained, 4) == {"params", "opt_state", "progress", "loop", "data"}
  lines = ["Klicken Sie auf OK.", "Wählen Sie eine Datei."]
  assert translate.translate_lines(bare, lines, beam_size=2) == translate.translate_lines(trained, lines, beam_size=2)
  a = evaluate.evaluate(config, bare, split="test", max_sentences=4)
  b = evaluate.evaluate(config, trained, split="test", max_sentences=4)
  assert a["metrics"]["test/loss"] == b["metrics"]["test/loss"] and a["bleu"] == b["bleu"]
  # Fine-tuning starts from it with init_from (its own optimizer), not by resuming it.
  tuned = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=2, init_from=bare)
  assert "train/loss" in train.train_and_evaluate(tuned, str(tmp_path / "tuned"))

  # It is not a run to resume: training in it stops with one message, and the checkpoint stays.
  with pytest.raises(errors.ConfigError, match="init_from"):
    train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=6), bare)
  assert _items(bare, 0) == {"params"}


def _items(workdir: str, step: int) -> set:
  """The Orbax items of checkpoint `step` in `workdir`."""
  directory = os.path.join(workdir, "checkpoints", str(step))
  return {n for n in os.listdir(directory) if os.path.isdir(os.path.join(directory, n))}


class _SavedDataState:
  """A data position read back from a checkpoint's file, handed to Grain's handler as a live iterator's would be."""

  def __init__(self, path: str):
    with open(path, "rb") as f:
      self._state = f.read()

  def get_state(self) -> bytes:
    """The saved bytes."""
    return self._state


def _rewrite_in_old_layout(source: str, dest: str, config, step: int):
  """Copies `source`'s checkpoint `step` into `dest` as checkpoints were written before the split: one "state" item."""
  os.makedirs(dest)
  shutil.copyfile(os.path.join(source, "config.json"), os.path.join(dest, "config.json"))
  run_vocab.copy_kept(source, dest)
  _, abstract, _, _ = experiment.build(config, parallel.make_mesh(config.mesh_shape), abstract_only=True)
  reader = checkpoint.make_manager(source, read_only=True)
  state, _ = checkpoint.restore(reader, abstract, step)
  data_file = os.path.join(source, "checkpoints", str(step), "data", "process_0-of-1.json")
  manager = checkpoint.make_manager(dest)
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=grain.checkpoint.CheckpointSave(_SavedDataState(data_file)),
                                             loop=ocp.args.JsonSave(checkpoint.loop_state(reader, step))), force=True)
  manager.wait_until_finished()
  manager.close()


def test_checkpoints_of_the_old_one_item_layout_keep_restoring_and_resume_like_new_ones(small_corpus_dir, vocab_dir,
                                                                                       tmp_path):
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=3)
  new, old = str(tmp_path / "new"), str(tmp_path / "old")
  train.train_and_evaluate(config, new)
  _rewrite_in_old_layout(new, old, config, 3)
  assert _items(old, 3) == {"state", "data", "loop"}

  # Every reader of the parameters alone: inference (into the model's structure) and export (as saved).
  _, abstract, _, _ = experiment.build(config, parallel.make_mesh(config.mesh_shape), abstract_only=True)
  (old_params, old_step), (new_params, _) = (checkpoint.restore_params(w, abstract.params) for w in (old, new))
  assert old_step == 3
  for x, y in zip(jax.tree.leaves(old_params), jax.tree.leaves(new_params)):
    np.testing.assert_array_equal(x, y)
  old_saved, new_saved = workdir_lib.read_workdir(old)[1], workdir_lib.read_workdir(new)[1]
  assert jax.tree.structure(old_saved) == jax.tree.structure(new_saved)
  for x, y in zip(jax.tree.leaves(old_saved), jax.tree.leaves(new_saved)):
    np.testing.assert_array_equal(x, y)

  # Training resumes from the old layout exactly as from the new one, and saves the new layout.
  longer = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=6)
  train.train_and_evaluate(longer, old)
  train.train_and_evaluate(longer, new)
  assert _items(old, 6) == {"params", "opt_state", "progress", "loop", "data"}
  for x, y in zip(jax.tree.leaves(checkpoint.restore_params(old, abstract.params)[0]),
                  jax.tree.leaves(checkpoint.restore_params(new, abstract.params)[0])):
    np.testing.assert_array_equal(x, y)


def test_the_ema_is_read_alone_out_of_the_optimizer_state(small_corpus_dir, vocab_dir, tmp_path):
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=3, ema_decay=0.9)
  run, damaged, old = (str(tmp_path / name) for name in ("run", "damaged", "old"))
  train.train_and_evaluate(config, run)
  _, abstract, _, _ = experiment.build(config, parallel.make_mesh(config.mesh_shape), abstract_only=True)
  full, _ = checkpoint.restore(checkpoint.make_manager(run, read_only=True), abstract)
  expected = ema.find(full.opt_state).ema
  averaged, step = checkpoint.restore_ema(run, abstract)
  assert step == 3
  for x, y in zip(jax.tree.leaves(averaged), jax.tree.leaves(expected), strict=True):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, p) for x, p in zip(jax.tree.leaves(averaged), jax.tree.leaves(full.params)))

  # Adam's moments (and the average's count) set to NaN: the full restore refuses the checkpoint, the
  # EMA restore never reads them.
  os.makedirs(damaged)
  shutil.copyfile(os.path.join(run, "config.json"), os.path.join(damaged, "config.json"))
  run_vocab.copy_kept(run, damaged)
  poisoned = jax.tree.map(
    lambda x: x if isinstance(x, ema.EmaState) else x * np.nan if jnp.issubdtype(x.dtype, jnp.floating) else x,
    full.opt_state, is_leaf=lambda x: isinstance(x, ema.EmaState))
  manager = checkpoint.make_manager(damaged)
  checkpoint.save(manager, 3, full.replace(opt_state=poisoned))
  manager.wait_until_finished()
  manager.close()
  with pytest.raises(errors.CheckpointError, match="non-finite"):
    checkpoint.restore(checkpoint.make_manager(damaged, read_only=True), abstract, 3)
  for x, y in zip(jax.tree.leaves(checkpoint.restore_ema(damaged, abstract)[0]), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(x, y)

  # A checkpoint of the old one-item layout gives the same average.
  _rewrite_in_old_layout(run, old, config, 3)
  for x, y in zip(jax.tree.leaves(checkpoint.restore_ema(old, abstract)[0]), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(x, y)
