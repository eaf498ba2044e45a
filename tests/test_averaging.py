"""Checkpoint averaging on a real tiny run: tx_jax.average writes the mean, evaluate --average_last scores it."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import with_fields
from tx_jax import average, errors, evaluate, parallel, train
from tx_jax.training import checkpoint, experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(config, workdir, step):
  mesh = parallel.make_mesh(config.mesh_shape)
  _, abstract, _, _ = experiment.build(config, mesh, abstract_only=True)
  state, _ = checkpoint.restore(checkpoint.make_manager(workdir, read_only=True), abstract, step)
  return jax.device_get(state)


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_corpus_dir, vocab_dir):
  """A tiny run with checkpoints at steps 2, 4, 6 and 8 (all kept)."""
  from conftest import make_tiny_config
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=8, checkpoint_every_steps=2,
                            eval_every_steps=8, max_checkpoints_to_keep=4)
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(config, workdir)
  return config, workdir


def test_average_is_the_leafwise_mean_and_a_workdir_every_tool_reads(run, tmp_path):
  config, workdir = run
  out = str(tmp_path / "avg3")
  record = average.average_workdir(workdir, 3, out)
  assert record["steps"] == [4, 6, 8]
  with open(os.path.join(out, average.AVERAGE_FILE)) as f:
    assert json.load(f)["steps"] == [4, 6, 8]
  parts = [_params(config, workdir, s) for s in (4, 6, 8)]
  averaged = _params(config, out, 8)
  assert int(averaged.step) == 8
  for leaves in zip(jax.tree.leaves(averaged.params), *(jax.tree.leaves(p.params) for p in parts)):
    got, *each = leaves
    np.testing.assert_allclose(got, np.mean(np.stack(each), axis=0), rtol=1e-6, atol=1e-7)
  # The newest step's optimizer state travels with the average, so training could continue from it.
  for x, y in zip(jax.tree.leaves(averaged.opt_state), jax.tree.leaves(parts[-1].opt_state)):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(averaged.params),
                                                      jax.tree.leaves(parts[-1].params)))

  # evaluate --average_last=3 on the run scores exactly what evaluate scores on the written average.
  direct = evaluate.evaluate(config, workdir, split="test", average_last=3, max_sentences=8)
  written = evaluate.evaluate(config, out, split="test", max_sentences=8)
  assert direct["averaged_steps"] == [4, 6, 8]
  assert direct["metrics"]["test/loss"] == pytest.approx(written["metrics"]["test/loss"], rel=1e-6)
  assert direct["bleu"] == pytest.approx(written["bleu"])
  # BLEU of the first 8 sentences is kept apart from the whole split's (max_sentences wrote over them before).
  assert os.path.exists(os.path.join(workdir, "eval", "test_step8_avg3_first8.json"))
  assert not os.path.exists(os.path.join(workdir, "eval", "test_step8_avg3.json"))
  assert "mean of steps 4, 6, 8" in evaluate.report(direct)
  assert not direct["ema"]


def test_average_mistakes_are_one_line(run, tmp_path):
  config, workdir = run
  with pytest.raises(errors.CheckpointError, match="fewer than the 9"):
    average.average_workdir(workdir, 9, str(tmp_path / "x"))
  with pytest.raises(errors.ConfigError, match="exclude each other"):
    evaluate.evaluate(config, workdir, step=4, average_last=2)
  with pytest.raises(errors.ConfigError, match="must differ"):
    average.average_workdir(workdir, 2, workdir)
  result = subprocess.run([sys.executable, "-m", "tx_jax.average", f"--workdir={workdir}", "--last=0",
                           f"--out={tmp_path / 'y'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith("tx_jax.average: --last")
  assert "Traceback" not in result.stderr


def test_decoding_sweep_table_on_validation(run):
  config, workdir = run
  summary = evaluate.decoding_sweep(config, workdir, ["1", "2"], ["0.6", "1.0"], max_sentences=8)
  rows = {(r["beam_size"], r["length_penalty"]): r for r in summary["rows"]}
  assert sorted(rows) == [(1, 0.6), (1, 1.0), (2, 0.6), (2, 1.0)] and summary["split"] == "validation"
  assert rows[1, 0.6]["bleu"] == rows[1, 1.0]["bleu"]  # greedy decoding has no length penalty
  plain = evaluate.evaluate(config, workdir, split="validation", max_sentences=8)  # the run's beam 2, alpha 0.6
  assert rows[2, 0.6]["bleu"] == pytest.approx(plain["bleu"])
  assert summary["best"]["bleu"] == max(r["bleu"] for r in summary["rows"])
  assert all(r["length_ratio"] >= 0 for r in summary["rows"])  # a model 8 steps old may say nothing
  with open(os.path.join(workdir, "eval", "sweep_validation_step8_first8.md")) as f:  # 8 sentences: kept apart
    assert f.read().count("\n| ") == 6  # header, separator and 4 settings
  result = subprocess.run([sys.executable, "-m", "tx_jax.evaluate", f"--workdir={workdir}", "--beam_sizes=1,x"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
    "tx_jax.evaluate: --beam_sizes has 'x', not a number; pass e.g. --beam_sizes=1,4,8.")


def test_the_average_of_a_run_with_an_ema_is_what_every_tool_reads(small_corpus_dir, vocab_dir, tmp_path):
  from conftest import make_tiny_config
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=4, checkpoint_every_steps=2,
                            eval_every_steps=4, max_checkpoints_to_keep=2, ema_decay=0.9, num_predict_sentences=0)
  workdir, out = str(tmp_path / "run"), str(tmp_path / "avg2")
  train.train_and_evaluate(config, workdir)
  assert average.average_workdir(workdir, 2, out)["ema_replaced_by_the_average"]
  direct = evaluate.evaluate(config, workdir, split="test", average_last=2, max_sentences=4)
  # The tools read the EMA of an EMA run by default: in the written average, it is the mean, as --nouse_ema's.
  for use_ema in (True, False):
    written = evaluate.evaluate(config, out, split="test", max_sentences=4, use_ema=use_ema)
    assert written["metrics"]["test/loss"] == pytest.approx(direct["metrics"]["test/loss"], rel=1e-6)
  ema_of_newest = evaluate.evaluate(config, workdir, split="test", max_sentences=4)  # what it read before the fix
  assert ema_of_newest["metrics"]["test/loss"] != pytest.approx(direct["metrics"]["test/loss"], rel=1e-6)


def test_a_run_with_more_data_shards_than_rows_evaluates_on_one_device(run):
  config, workdir = run
  plain = evaluate.evaluate(config, workdir, split="test", max_sentences=2)
  # Trained on 16 devices, say: 16 shards of this device's 8 rows held 0 rows each.
  again = evaluate.evaluate(with_fields(config, data_shards=16), workdir, split="test", max_sentences=2)
  scores = lambda summary: {k: v for k, v in summary["metrics"].items() if not k.endswith("_seconds")}
  assert scores(again) == pytest.approx(scores(plain), rel=1e-6) and "test/loss" in scores(plain)
