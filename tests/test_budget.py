"""Budgeted runs (train_minutes): stop at the first step past the budget, save and evaluate there, resume the clock."""

import json
import os

from conftest import make_tiny_config, train_step_compiles
from tx_jax import train
from tx_jax.training import budget, checkpoint


def _clock_by_step(workdir) -> dict:
  """step -> training clock after it, from the batch log (the last time the step ran)."""
  with open(os.path.join(workdir, "batches_process0.jsonl")) as f:
    return {e["step"]: e["train_seconds"] for e in map(json.loads, f)}


def _eval_steps(workdir) -> list:
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  acc.Reload()
  return [e.step for e in acc.Scalars("eval/loss")]


def test_budget_stops_at_the_first_step_past_it_and_a_larger_budget_continues(small_corpus_dir, vocab_dir, tmp_path,
                                                                                caplog, monkeypatch):
  workdir = str(tmp_path / "run")
  started, from_state = [], budget.TrainClock.from_state  # each run's clock as it starts

  def recording(state):
    clock = from_state(state)
    started.append(clock.train_seconds)
    return clock
  monkeypatch.setattr(budget.TrainClock, "from_state", staticmethod(recording))

  def run(minutes):
    config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=100_000, train_minutes=minutes,
                              eval_every_steps=100_000, checkpoint_every_steps=100_000, log_every_steps=50,
                              num_predict_sentences=2, log_batches=True)
    return train.train_and_evaluate(config, workdir)

  first = run(0.1)  # 6 s of training steps
  stop = first["budget_reached_at_step"]
  clock = _clock_by_step(workdir)
  assert clock[stop] >= 6.0 > clock[stop - 1]  # the first step whose clock passes the budget
  assert abs(first["budget/train_seconds"] - clock[stop]) < 1e-5 and first["budget/steps"] == stop
  assert first["budget/target_tokens"] > 0
  manager = checkpoint.make_manager(workdir, read_only=True)
  assert manager.latest_step() == stop  # saved there ...
  assert _eval_steps(workdir) == [stop]  # ... and evaluated as at the end
  saved = checkpoint.loop_state(manager, stop)["clock"]
  assert abs(saved["train_seconds"] - clock[stop]) < 1e-5 and saved["target_tokens"] == first["budget/target_tokens"]

  # 6 s more than the first run's clock: the clock continues from the checkpoint (a fresh clock would
  # make step stop + 1's smaller). Counted from the clock, not from the first budget, since a step may
  # overshoot the budget by seconds (one that compiled the step of a new token_capacity share, say).
  seconds = round(clock[stop] + 6.0, 3)
  assert started == [0.0]
  started.clear()
  second = run(seconds / 60)
  stop2 = second["budget_reached_at_step"]
  assert started and set(started) == {saved["train_seconds"]}  # every clock it made starts where the saved one stood
  clock = _clock_by_step(workdir)
  assert stop2 > stop and clock[stop + 1] > clock[stop]
  assert clock[stop2] >= seconds > clock[stop2 - 1]
  assert second["budget/target_tokens"] > first["budget/target_tokens"]
  assert _eval_steps(workdir) == [stop, stop2]

  third = []  # an exhausted budget trains nothing more, says so and compiles no train step
  assert train_step_compiles(lambda: third.append(run(seconds / 60)), caplog) == []
  assert third[0]["budget_reached_at_step"] == stop2
  assert checkpoint.make_manager(workdir, read_only=True).latest_step() == stop2
