"""The training loop's parts besides the step: hooks run every N steps, and the window a log line reports on."""

import contextlib
import dataclasses
import time
from typing import Callable

import numpy as np

from tx_jax.training import metrics


@dataclasses.dataclass(frozen=True)
class Hook:
  """`run(step)` after every `every`-th step and after the final one (the last step, or where a budget ends the run)."""

  every: int
  run: Callable[[int], None]

  def due(self, step: int, final: bool) -> bool:
    """Whether the hook runs after `step`."""
    return final or step % self.every == 0


def run_due(hooks, step: int, final: bool):
  """Runs, in their order, the hooks due after `step`."""
  for hook in hooks:
    if hook.due(step, final):
      hook.run(step)


class Window:
  """What the loop adds up between two log lines: metric sums, tokens, model FLOPs, host data wait and step times."""

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock  # seconds; tests give their own
    self._pauses = 0  # paused blocks open (nested ones count once)
    self.reset()

  def reset(self):
    """Starts an empty window now."""
    self.sums, self.tokens, self.flops, self.data_wait, self.step_times = {}, 0, 0.0, 0.0, []
    self.compile_seconds = 0.0
    self.start = self._clock()

  @contextlib.contextmanager
  def paused(self):
    """Leaves the block's time out of the window's rates: evaluation and saving are not training throughput.

    Only the pause is left out, so a window that spans it keeps its steps before and after (a
    checkpoint every 250 steps inside a window of 100 cost the rates neither those steps' time
    nor their tokens). A block inside another counts once.
    """
    self._pauses += 1
    begin = self._clock()
    try:
      yield
    finally:
      self._pauses -= 1
      if not self._pauses:
        self.start += self._clock() - begin

  def add_batch(self, tokens: int, flops: float, data_wait: float):
    """A batch fed to the step: its tokens and model FLOPs (all processes), and the seconds waited for it."""
    self.tokens += tokens
    self.flops += flops
    self.data_wait += data_wait

  def add_step(self, step_sums: dict, seconds: float, compile_seconds: float = 0.0):
    """A step's metric sums (on the host) and its wall time, of which `compile_seconds` compiled a new train step.

    The compilation counts in neither the step's time nor the window's rates (config.token_capacity
    compiles a step for each share the first time a batch needs it); perf/share_compile_seconds reports it.
    """
    self.sums = {k: self.sums.get(k, 0.0) + np.asarray(v, np.float64) for k, v in step_sums.items()}
    self.sums["learning_rate"] = float(step_sums["learning_rate"])  # the latest, not a sum
    self.step_times.append(seconds - compile_seconds)
    self.compile_seconds += compile_seconds
    self.start += compile_seconds

  def summary(self, device_count: int, peak_flops: float | None) -> dict:
    """train/* means and perf/* rates of the window (peak_flops per device, for perf/mfu when known)."""
    elapsed = self._clock() - self.start
    steps = self.sums["steps"]
    summary = metrics.summarize(self.sums, "train")
    summary["perf/tokens_per_sec"] = self.tokens / elapsed
    summary["perf/steps_per_sec"] = steps / elapsed
    summary["perf/step_seconds"] = elapsed / steps
    summary["perf/tokens_per_sec_per_device"] = self.tokens / elapsed / device_count
    summary["perf/data_wait_seconds"] = self.data_wait / steps  # per step: the host's share of a step
    summary["perf/max_step_seconds"] = max(self.step_times)
    summary["perf/share_compile_seconds"] = self.compile_seconds  # train steps compiled in the window, left out above
    if peak_flops:  # model FLOP/s over the peak of all devices
      summary["perf/mfu"] = self.flops / elapsed / (peak_flops * device_count)
    return summary
