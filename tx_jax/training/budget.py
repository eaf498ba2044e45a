"""The training clock: seconds spent in training steps and target tokens seen, over every start of a run.

`config.train_minutes` (0 = off) stops a run at the first step whose clock passes the budget, so
runs on different machines or configs compare at equal wall-clock. The clock counts each step's
wall time (waiting for its batch included, the first step's compilation too), never evaluation or
saving, and lives in the checkpoint's loop item, so a restarted run continues it. In a multi-process
run process 0's clock decides, so every process stops after the same step.
"""

import dataclasses

import jax
import numpy as np
from jax.experimental import multihost_utils


@dataclasses.dataclass
class TrainClock:
  """Training seconds and target tokens so far (all processes' tokens)."""

  train_seconds: float = 0.0
  target_tokens: int = 0

  @classmethod
  def from_state(cls, state: dict | None) -> "TrainClock":
    """The clock a checkpoint's loop item saved (a fresh one for None)."""
    state = state or {}
    return cls(float(state.get("train_seconds", 0.0)), int(state.get("target_tokens", 0)))

  def add(self, seconds: float, target_tokens: int):
    """Counts one training step."""
    self.train_seconds += seconds
    self.target_tokens += int(target_tokens)

  def over(self, minutes: float) -> bool:
    """Whether the clock has passed a budget of `minutes` (> 0); the same answer on every process."""
    if not minutes or minutes <= 0:
      return False
    seconds = self.train_seconds
    if jax.process_count() > 1:
      seconds = float(multihost_utils.broadcast_one_to_all(np.float64(seconds)))
    return seconds >= 60.0 * minutes

  def state(self) -> dict:
    """What the loop item stores."""
    return dataclasses.asdict(self)
