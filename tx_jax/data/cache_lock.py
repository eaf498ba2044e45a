"""A host-wide lock on a data cache directory, so processes that share the cache fetch a corpus once.

Several processes of one run on a host (or several runs, or test workers) may reach a corpus that
is not cached yet at the same moment; the first one fetches it under this lock and the others,
once they hold it, find it in place. `fcntl.flock` is released by the kernel when its process
dies, so a killed fetch never leaves a stale lock behind.
"""

import contextlib
import fcntl
import os

from tx_jax import errors


@contextlib.contextmanager
def held(directory: str, name: str):
  """Holds the exclusive lock DIRECTORY/.NAME.lock (created if missing) for the `with` block."""
  try:
    os.makedirs(directory, exist_ok=True)
    f = open(os.path.join(directory, f".{name}.lock"), "a")  # pylint: disable=consider-using-with
  except OSError as e:
    raise errors.DataError(f"The data cache {directory} cannot be written ({e.strerror or e}); point "
                           "config.data_cache_dir at a directory you can create and write.") from None
  with f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
