"""Keeps the console readable: library INFO chatter and tracebacks repeating an error reported once are dropped."""

import logging
import os
import sys

from absl import logging as absl_logging

from tx_jax import errors

# Source directories whose INFO records are dropped, e.g. jax/_src/xla_bridge.py's "Unable to initialize backend
# 'tpu'" (what JAX tries on every start); matched on the file path, as Orbax logs through absl's one logger.
_NOISY = tuple(f"{os.sep}{os.path.join(*d)}{os.sep}" for d in (("orbax",), ("tensorstore",), ("jax", "_src")))
_ORBAX = f"{os.sep}orbax{os.sep}"
# Orbax warnings that describe what tx_jax asks for on purpose, not a problem: a read-only manager
# for evaluation, and keep-best saves between evaluations that carry no metrics.
_EXPECTED_ORBAX_WARNINGS = ("Given directory is read only", "CheckpointManagerOptions.read_only=True",
                            "Requested `tracked_metric`; did not provide metrics")


class _DropLibraryInfo(logging.Filter):
  """Drops library INFO records, Orbax's expected warnings and its tracebacks of a full disk; passes the rest."""

  def filter(self, record):
    if record.levelno >= logging.WARNING:
      if _disk_full_traceback(record):
        return False
      return not (_ORBAX in record.pathname and record.getMessage().startswith(_EXPECTED_ORBAX_WARNINGS))
    return not any(n in record.pathname for n in _NOISY)


def _disk_full_traceback(record) -> bool:
  """An Orbax thread's traceback of a full disk (or asyncio's, of Orbax's abandoned writes), logged before it is raised.

  Orbax raises the error again in the main thread (from save or wait_until_finished); the entry point reports it once.
  """
  return (bool(record.exc_info) and errors.disk_full(record.exc_info[1])
          and (_ORBAX in record.pathname or record.name == "asyncio"))


def _drop_closed_loop_callbacks(previous):
  """An unraisable hook that drops TensorStore's callbacks into an event loop Orbax closed, passing on the rest.

  When one write of a checkpoint fails, Orbax closes that save's event loop while TensorStore still
  completes the others; each completion then prints "RuntimeError: Event loop is closed", a traceback
  saying nothing beyond the error already raised.
  """
  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)
  return hook


def quiet_library_logs():
  """Installs the filter on absl's handler and the unraisable hook (call once in an entry point's main)."""
  absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
  sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)
