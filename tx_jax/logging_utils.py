"""Keeps the console readable: library INFO chatter (Orbax, absl internals) is dropped."""

import logging

from absl import logging as absl_logging

_NOISY = ("orbax", "tensorstore", "jax._src")
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
