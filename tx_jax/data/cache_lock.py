"""A host-wide lock on a data cache directory, so processes that share the cache fetch a corpus once.

Several processes of one run on a host (or several runs, or test workers) may reach a corpus that
is not cached yet at the same moment; the first one fetches it under this lock and the others,
once they hold it, find it in place. `fcntl.flock` is released by the kernel when its process
dies, so a killed fetch never leaves a stale lock behind.
"""

import contextlib
import fcntl
import os


@contextlib.contextmanager
def held(directory: str, name: str):
  """Holds the exclusive lock DIRECTORY/.NAME.lock (created if missing) for the `with` block."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, f".{name}.lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
