"""Compiling a jitted step on a background thread while the main thread builds what the step will run on."""

import contextlib
import threading
import time

from absl import logging


@contextlib.contextmanager
def compiling(jitted, *abstract_args, name: str):
  """Traces, lowers and compiles `jitted` for `abstract_args` on a thread while the `with` block runs.

  `abstract_args` are jax.ShapeDtypeStructs carrying the shardings (and weak types) of the arrays
  the step will be called with; the call then finds its executable in JAX's lowering and
  compilation caches instead of compiling it. XLA compiles without holding the GIL, so on a
  machine with a core to spare the step compiles beside the block's own work (init's compile at
  start-up). The block's end waits for the thread. A failure on the thread is only logged: the
  first real call compiles again and raises it where it always did.
  """
  outcome = {}

  def run():
    start = time.perf_counter()
    try:
      jitted.lower(*abstract_args).compile()
      outcome["seconds"] = time.perf_counter() - start
    except Exception as e:  # pylint: disable=broad-except  (the real call raises it again, with its context)
      outcome["error"] = e

  thread = threading.Thread(target=run, name=f"compile {name}", daemon=True)
  thread.start()
  try:
    yield
  finally:
    thread.join()
  if "error" in outcome:
    logging.debug("Compiling the %s ahead failed (%s); its first call compiles it.", name, outcome["error"])
  else:
    logging.info("Compiled the %s ahead in %.1fs, beside the start-up's other work.", name, outcome["seconds"])
