"""A JAX profiler trace of chosen training steps (config.profile_steps), written where TensorBoard looks.

The trace lands in WORKDIR/tensorboard/plugins/profile/<time>/ as .xplane.pb files, which the
XProf plugin of TensorBoard lists (pip install "tx_jax[profile]"; README "Speed").
"""

import os

import jax
from absl import logging


class StepProfiler:
  """Starts a trace before the first profiled step and stops it after the last one (no-op when off).

  A run resumed inside the range (stopped or killed while profiling) traces the steps it has left.
  """

  def __init__(self, profile_steps, workdir: str):
    steps = tuple(profile_steps or ())
    self.first, self.last = steps if steps else (None, None)
    self.logdir = os.path.join(workdir, "tensorboard")
    self.active = False
    self.started_at = None

  def before(self, step: int):
    """Called before training step `step` runs."""
    if self.first is not None and not self.active and self.first <= step <= self.last:
      jax.profiler.start_trace(self.logdir)
      self.active, self.started_at = True, step

  def after(self, step: int, outputs=None):
    """Called once training step `step` has run; waits for `outputs` before closing the trace."""
    if self.active and step >= self.last:
      jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self.active = False
      logging.info("Profiled steps %d..%d into %s (TensorBoard's profile tab).", self.started_at, step, self.logdir)
      self.first = None  # once per run

  def close(self):
    """Stops a trace the loop left open (training ended or stopped inside the profiled steps)."""
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
