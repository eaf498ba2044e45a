"""Keeps the console readable: library INFO chatter (Orbax, TensorStore, JAX internals) is dropped."""

import logging
import os

from absl import logging as absl_logging

# Source directories whose INFO records are dropped, e.g. jax/_src/xla_bridge.py's "Unable to initialize backend
# 'tpu'" (what JAX tries on every start); matched on the file path, as Orbax logs through absl's one logger.
_NOISY = tuple(f"{os.sep}{os.path.join(*d)}{os.sep}" for d in (("orbax",), ("tensorstore",), ("jax", "_src")))
# Orbax warnings that describe what tx_jax asks for on purpose, not a problem: a read-only manager
# for evaluation, and keep-best saves between evaluations that carry no metrics.
_EXPECTED_ORBAX_WARNINGS = ("Given directory is read only", "CheckpointManagerOptions.read_only=True",
                            "Requested `tracked_metric`; did not provide metrics")


class _DropLibraryInfo(logging.Filter):
  """Passes warnings and errors from anywhere (but Orbax's expected ones), INFO only from outside the noisy libraries."""

  def filter(self, record):
    if record.levelno >= logging.WARNING:
      return not ("orbax" in record.pathname and record.getMessage().startswith(_EXPECTED_ORBAX_WARNINGS))
    return not any(n in record.pathname for n in _NOISY)


def quiet_library_logs():
  """Installs the filter on absl's handler (call once in an entry point's main)."""
  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
