"""One writer per workdir: an exclusive lock on WORKDIR/.lock held for the life of a training run.

The lock is an fcntl.flock on an open file, so the kernel releases it when its process dies, even by
SIGKILL: a stale lock left by a killed run is simply taken over. (flock needs a local or
lock-supporting filesystem; on others the lock is advisory only.)
"""

import fcntl
import json
import os
import socket
import time

from tx_jax import errors

LOCK_FILE = ".lock"


class WorkdirLock:
  """Holds WORKDIR/.lock while entered; a second holder fails with a message naming the first."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def __enter__(self):
    self._file = open(self.path, "a+")
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      holder = self._file.read().strip() or "{}"
      self._file.close()
      try:
        info = json.loads(holder)
      except ValueError:
        info = {}
      raise errors.ConfigError(
        f"--workdir={os.path.dirname(self.path)} is in use by another tx_jax.train (pid {info.get('pid', '?')} on "
        f"{info.get('host', '?')}, started {info.get('started', '?')}); wait for it to finish, stop it, or pass "
        "another --workdir.") from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    self._file.flush()
    return self

  def __exit__(self, *exc):
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()
    return False
