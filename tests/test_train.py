"""Real training runs of a tiny model on a slice of the real corpus: step, resume, TensorBoard, evaluate."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import sacrebleu
from flax import nnx

from conftest import first_train_batch, straight_and_resumed_runs, with_fields

from tx_jax import evaluate, parallel, train, translate
from tx_jax.inference import restore
from tx_jax.training import checkpoint, experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAGS = ("train/loss", "train/accuracy", "train/learning_rate", "train/grad_norm", "perf/tokens_per_sec",
        "eval/loss", "eval/accuracy", "eval/bleu")


def test_one_train_step_reduces_loss_on_a_fixed_batch(tiny_config):
  tiny_config.dropout_rate = tiny_config.attention_dropout_rate = 0.0
  tiny_config.learning_rate, tiny_config.warmup_steps = 0.003, 0
  mesh = parallel.make_mesh(tiny_config.mesh_shape)
  batch = parallel.global_batch(first_train_batch(tiny_config, 8), mesh)
  _, state, train_fn, eval_fn = experiment.build(tiny_config, mesh)
  before = eval_fn(state.params, batch)
  state, sums = train_fn(state, batch)
  after = eval_fn(state.params, batch)
  np.testing.assert_allclose(float(sums["loss"]), float(before["loss"]), rtol=1e-5)  # same batch, no dropout
  assert float(after["loss"]) < float(before["loss"])


def _final_params(config, workdir):
  mesh = parallel.make_mesh(config.mesh_shape)
  _, abstract, _, _ = experiment.build(config, mesh, abstract_only=True)
  state, data_state = checkpoint.restore(checkpoint.make_manager(workdir, read_only=True), abstract)
  return jax.device_get(state), data_state


def test_stopped_and_restarted_run_matches_uninterrupted(tiny_config, tmp_path):
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(tiny_config, straight)
  resumed = str(tmp_path / "resumed")
  train.train_and_evaluate(with_fields(tiny_config, num_train_steps=3), resumed)
  assert checkpoint.make_manager(resumed, read_only=True).latest_step() == 3
  train.train_and_evaluate(tiny_config, resumed)  # same workdir: continues from step 3
  a, data_a = _final_params(tiny_config, straight)
  b, data_b = _final_params(tiny_config, resumed)
  assert int(a.step) == int(b.step) == 6 and data_a == data_b
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_tensorboard_events_and_evaluate_from_checkpoint(tiny_config, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  workdir = str(tmp_path / "run")
  tiny_config.attention_images = True
  train.train_and_evaluate(tiny_config, workdir)
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  acc.Reload()
  assert [e.step for e in acc.Images("eval/attention")] == [3, 6]  # at each evaluation
  for tag in TAGS:
    events = acc.Scalars(tag)
    assert events, tag
    assert all(math.isfinite(e.value) for e in events), tag
  assert "config" in "".join(acc.Tags()["tensors"])

  summary = evaluate.evaluate(tiny_config, workdir, split="test")
  assert summary["step"] == tiny_config.num_train_steps
  with open(summary["translations"], encoding="utf-8") as f:
    hypotheses = f.read().split("\n")[:-1]
  with open(os.path.join(tiny_config.data_dir, "test.en"), encoding="utf-8") as f:
    references = f.read().split("\n")[:-1]
  assert len(hypotheses) == len(references) == 64
  assert summary["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
  assert summary["scores"]["chrF"]["score"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
  assert summary["scores"]["TER"]["score"] == pytest.approx(sacrebleu.corpus_ter(hypotheses, [references]).score)
  for m in ("BLEU", "chrF", "TER"):  # SacreBLEU's signature and a bootstrap interval around its own score
    assert summary["scores"][m]["signature"].startswith("nrefs:1")
    assert summary["scores"][m]["ci95"] >= 0
  acc.Reload()  # evaluate wrote its results at the checkpoint's step
  assert [e.step for e in acc.Scalars("eval/test/bleu")] == [tiny_config.num_train_steps]
  with open(os.path.join(workdir, "eval", f"test_step{summary['step']}.json")) as f:
    assert json.load(f)["scores"]["BLEU"]["signature"].startswith("nrefs:1")
  # Evaluated in another compute dtype (--config.dtype=bfloat16): files and scalars of its own, beside the above.
  other = evaluate.evaluate(with_fields(tiny_config, dtype="bfloat16"), workdir, split="test", max_sentences=8)
  assert other["dtype"] == "bfloat16"  # and its 8 sentences' scores apart from the whole split's
  assert other["translations"].endswith(f"test_step{summary['step']}_bfloat16_first8.en")
  with open(other["translations"], encoding="utf-8") as f:
    assert len(f.read().split("\n")[:-1]) == 8
  with open(summary["translations"], encoding="utf-8") as f:
    assert f.read().split("\n")[:-1] == hypotheses
  acc.Reload()
  assert [e.step for e in acc.Scalars("eval/bfloat16_first8/test/bleu")] == [tiny_config.num_train_steps]

  # The same checkpoint through the command line: stdin lines -> stdout lines, blank lines kept.
  with open(os.path.join(tiny_config.data_dir, "test.de"), encoding="utf-8") as f:
    sources = f.read().split("\n")[:3]
  result = subprocess.run([sys.executable, "-m", "tx_jax.translate", f"--workdir={workdir}", "--beam_size=2"],
                          input="\n".join([sources[0], "", sources[1], sources[2]]) + "\n", cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.split("\n")[:-1]
  assert len(lines) == 4 and lines[1] == ""
  expected = translate.translate_lines(workdir, [sources[0], "", sources[1], sources[2]], beam_size=2)
  assert lines == expected  # the CLI is the library; a tiny model may well translate to ""

  # --dtype=bfloat16 decodes with a model that computes in it; the restored parameters stay float32.
  _, graphdef, params, _ = restore.restore_for_inference(workdir, dtype="bfloat16")
  assert nnx.merge(graphdef, params).cfg.dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  result = subprocess.run([sys.executable, "-m", "tx_jax.translate", f"--workdir={workdir}", "--beam_size=2",
                           "--dtype=bfloat16"], input="\n".join(sources) + "\n", cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split("\n")[:-1] == translate.translate_lines(workdir, sources, beam_size=2, dtype="bfloat16")


def _run_cli(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("override, field", [
  ("--config.num_heads=3", "config.emb_dim"),
  ("--config.learning_rate=-0.1", "config.learning_rate"),
  ("--config.positions=absolute", "config.positions"),
])
def test_bad_config_fails_with_message_naming_the_field(tmp_path, override, field):
  result = _run_cli("tx_jax.train", "--config=configs/default.py", f"--workdir={tmp_path}", override)
  assert result.returncode != 0
  assert field in result.stderr
  assert "Traceback" not in result.stderr


def test_evaluate_without_checkpoint_says_so(tiny_config, tmp_path):
  from tx_jax import errors
  with pytest.raises(errors.CheckpointError, match="No checkpoint"):
    evaluate.evaluate(tiny_config, str(tmp_path / "empty"), split="test")


def test_missing_vocabulary_says_how_it_is_made(tmp_path):
  from tx_jax import errors
  from tx_jax.data import tokenizer
  with pytest.raises(errors.DataError, match="spm.model is missing"):
    tokenizer.load(str(tmp_path / "spm.model"))


def test_rbg_dropout_stream_resumes_exactly_and_differs_from_threefry(tiny_config, tmp_path):
  tiny_config.update(dropout_rate=0.1, attention_dropout_rate=0.1, prng_impl="rbg")
  straight, resumed = straight_and_resumed_runs(tiny_config, tmp_path)
  a, _ = _final_params(tiny_config, straight)
  b, _ = _final_params(tiny_config, resumed)
  assert a.rng.shape == (4,)  # rbg key data
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)
  threefry = with_fields(tiny_config, prng_impl="threefry2x32")
  train.train_and_evaluate(threefry, str(tmp_path / "threefry"))
  c, _ = _final_params(threefry, str(tmp_path / "threefry"))
  assert c.rng.shape == (2,)
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(c.params)))
