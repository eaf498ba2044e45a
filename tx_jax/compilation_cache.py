"""JAX's persistent compilation cache under the data cache, so a second run of a config skips compiling.

On by default (config.compilation_cache): compiled XLA programs are written to
<data_cache_dir>/compilation_cache and read back by any later process that compiles the same
program (same model, shapes, mesh, jax version and flags). $JAX_COMPILATION_CACHE_DIR, when set,
wins, as does a directory set earlier in the same process (JAX opens its cache once).
"""

import os

import jax
from absl import logging

CACHE_SUBDIR = "compilation_cache"


def enable(config) -> str | None:
  """Points JAX's persistent compilation cache at the config's data cache; returns the directory in use."""
  current = jax.config.jax_compilation_cache_dir
  if current or not config.get("compilation_cache", True):
    return current
  path = os.path.join(os.path.expanduser(config.get("data_cache_dir", "~/.cache/tx_jax")), CACHE_SUBDIR)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:  # a read-only or foreign data cache costs the cache, never the run
    logging.warning("No compilation cache: %s cannot be created (%s); every run compiles afresh.", path, e.strerror)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  return path
