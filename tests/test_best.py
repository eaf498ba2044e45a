"""Keep-best checkpoints, evaluate --step=best and early stopping whose count survives a restart (real tiny runs)."""

import os

import pytest

from conftest import make_tiny_config, train_step_compiles
from tx_jax import errors, evaluate, train
from tx_jax.training import best, checkpoint


def _eval_losses(workdir) -> dict:
  """{step: eval/loss} as training wrote it to TensorBoard."""
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  acc.Reload()
  return {e.step: e.value for e in acc.Scalars("eval/loss")}


def _config(small_corpus_dir, vocab_dir, **overrides):
  return make_tiny_config(small_corpus_dir, vocab_dir, eval_every_steps=2, checkpoint_every_steps=100,
                          num_eval_steps=1, num_predict_sentences=2, **overrides)


def test_keep_best_keeps_the_best_beside_the_newest_and_evaluate_finds_it(small_corpus_dir, vocab_dir, tmp_path):
  # "max" on eval/loss keeps the *worst* loss, which as training improves is an early step, not the newest.
  config = _config(small_corpus_dir, vocab_dir, num_train_steps=8, best_metric="eval/loss", best_mode="max",
                   max_checkpoints_to_keep=1, keep_best=1)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  losses = _eval_losses(workdir)
  assert sorted(losses) == [2, 4, 6, 8]
  worst = max(losses, key=losses.get)
  kept = checkpoint.make_manager(workdir, read_only=True).all_steps()
  assert sorted(kept) == sorted({worst, 8})
  summary = evaluate.evaluate(config, workdir, step="best", split="test", max_sentences=4)
  assert summary["step"] == worst


def test_early_stopping_count_survives_a_restart(small_corpus_dir, vocab_dir, tmp_path, caplog):
  # With "max" on a falling loss, evaluations stop improving after the first: patience 2 ends the run early.
  settings = dict(best_metric="eval/loss", best_mode="max", early_stopping_patience=2)
  straight = str(tmp_path / "straight")
  done = train.train_and_evaluate(_config(small_corpus_dir, vocab_dir, num_train_steps=20, **settings), straight)
  assert done["early_stopped_at_step"] < 20
  losses = _eval_losses(straight)
  assert done["best_step"] == max(losses, key=losses.get)

  restarted = str(tmp_path / "restarted")
  first = done["best_step"] + 2  # one evaluation after the best: the count stands at 1 when the run ends
  train.train_and_evaluate(_config(small_corpus_dir, vocab_dir, num_train_steps=first, **settings), restarted)
  state = checkpoint.loop_state(checkpoint.make_manager(restarted, read_only=True), first)["best"]
  assert state["evals_since_best"] == 1 and state["best_step"] == done["best_step"]
  again = train.train_and_evaluate(_config(small_corpus_dir, vocab_dir, num_train_steps=20, **settings), restarted)
  assert again["early_stopped_at_step"] == done["early_stopped_at_step"]  # not 2 evaluations after the restart
  assert again["best_step"] == done["best_step"]
  # A third start of a run that has stopped early trains nothing, says so and compiles no train step.
  third = []
  compiles = train_step_compiles(lambda: third.append(train.train_and_evaluate(
    _config(small_corpus_dir, vocab_dir, num_train_steps=20, **settings), restarted)), caplog)
  assert third == [{"early_stopped_at_step": done["early_stopped_at_step"], "best_step": done["best_step"]}]
  assert compiles == []


def test_best_mode_and_mistakes(small_corpus_dir, vocab_dir, tmp_path):
  config = _config(small_corpus_dir, vocab_dir, best_metric="eval/bleu")
  assert best.mode(config) == "max"
  config.best_metric = "eval/loss"
  assert best.mode(config) == "min"
  tracker = best.Tracker("eval/loss", "min", patience=1)
  assert tracker.update(2, {"eval/loss": 3.0}) and not tracker.update(4, {"eval/loss": 3.0})
  assert tracker.should_stop()
  with pytest.raises(errors.ConfigError, match="not among this task's evaluation metrics"):
    tracker.update(6, {"eval/accuracy": 0.5})
  workdir = str(tmp_path / "plain")
  plain = _config(small_corpus_dir, vocab_dir, num_train_steps=2)
  train.train_and_evaluate(plain, workdir)
  with pytest.raises(errors.ConfigError, match="--step=best needs a run trained with config.best_metric"):
    evaluate.evaluate(plain, workdir, step="best")


def test_resuming_with_another_best_metric_ranks_the_old_checkpoints_last(small_corpus_dir, vocab_dir, tmp_path):
  workdir = str(tmp_path / "run")
  keep = dict(max_checkpoints_to_keep=1, keep_best=2)
  train.train_and_evaluate(_config(small_corpus_dir, vocab_dir, num_train_steps=4, best_metric="eval/loss", **keep),
                           workdir)
  # The saves of steps 2 and 4 carry eval/loss alone; ranking them by eval/accuracy stopped every save (KeyError).
  config = _config(small_corpus_dir, vocab_dir, num_train_steps=8, best_metric="eval/accuracy", **keep)
  train.train_and_evaluate(config, workdir)
  kept = checkpoint.make_manager(workdir, read_only=True).all_steps()
  assert set(kept) <= {2, 4, 6, 8} and 8 in kept
  assert evaluate.evaluate(config, workdir, step="best", split="test", max_sentences=2)["step"] in (6, 8)


def test_checkpoints_without_a_finite_metric_rank_worst():
  for mode, worst in (("min", float("inf")), ("max", float("-inf"))):
    rank = best.metric_fn("eval/loss", mode)
    assert rank({"eval/loss": 2.5}) == 2.5
    assert rank({"eval/bleu": 3.0}) == rank({"eval/loss": float("nan")}) == worst
  tracker = best.Tracker("eval/loss", "min", patience=2)
  assert not tracker.update(2, {"eval/loss": float("nan")}) and tracker.best_text() == "no finite value yet"
  assert tracker.update(4, {"eval/loss": 3.0}) and tracker.best_text() == "3.0000 of step 4"


def test_a_best_metric_the_evaluation_lacks_is_one_error_that_keeps_the_step(small_corpus_dir, vocab_dir, tmp_path):
  from tx_jax import configuration
  workdir = str(tmp_path / "run")
  config = _config(small_corpus_dir, vocab_dir, num_train_steps=4, best_metric="eval/bleu_score")
  with pytest.raises(errors.ConfigError, match="not among this task's evaluation metrics"):
    train.train_and_evaluate(config, workdir)
  assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [2]  # evaluated step 2, saved before failing
  # A decoded metric without decoding is known from the config alone: before anything is built.
  config.update(best_metric="eval/bleu", num_predict_sentences=0)
  with pytest.raises(errors.ConfigError, match="needs config.task='translation' and config.num_predict_sentences other than 0"):
    configuration.validate(config)
  config.num_predict_sentences = -1  # the whole validation split, as 0 meant before 7d1a9d5
  configuration.validate(config)

