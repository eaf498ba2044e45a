"""Keeps the console readable: library INFO chatter (Orbax, absl internals) is dropped."""

import logging

from absl import logging as absl_logging

_NOISY = ("orbax", "tensorstore", "jax._src")


class _DropLibraryInfo(logging.Filter):
  """Passes warnings and errors from anywhere, INFO only from outside the noisy libraries."""

  def filter(self, record):
    if record.levelno >= logging.WARNING:
      return True
    return not any(n in record.pathname for n in _NOISY)


def quiet_library_logs():
  """Installs the filter on absl's handler (call once in an entry point's main)."""
  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
