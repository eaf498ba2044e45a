"""Stop cleanly on SIGTERM (TPU preemption, SLURM, `kill`) and SIGINT (Ctrl-C): finish the step, save, exit 0.

The handler only records the signal; the training loop asks `should_stop()` after every step,
which in a multi-process run is one tiny all-gather, so every process stops after the same step
(a signal that reaches one host stops all of them). A second Ctrl-C aborts at once.
JAX's own preemption notifier (installed by jax.distributed.initialize) also catches SIGTERM;
the Python handler installed here, after it, takes over.
"""

import signal

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class PreemptionWatch:
  """Records SIGTERM/SIGINT while installed (a context manager) and says when to stop."""

  def __init__(self):
    self.signal = 0
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signal and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop without saving
    self.signal = signum
    logging.warning("Received %s: stopping after this step and saving a checkpoint (Ctrl-C again to abort).",
                    signal.Signals(signum).name)

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False

  def should_stop(self) -> bool:
    """Whether any process received a signal (the same answer on every process)."""
    if jax.process_count() == 1:
      return bool(self.signal)
    return bool(np.max(multihost_utils.process_allgather(np.int32(self.signal != 0))))

  @property
  def name(self) -> str:
    """The signal received ('SIGTERM'), or 'a signal on another process'."""
    return signal.Signals(self.signal).name if self.signal else "a signal on another process"
