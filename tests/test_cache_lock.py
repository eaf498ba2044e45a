"""The data-cache lock: one holder at a time across processes, and a killed holder leaves no stale lock."""

import fcntl
import os
import subprocess
import sys

import pytest

from tx_jax.data import cache_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLDER = ("import sys, time; sys.path.insert(0, {repo!r}); from tx_jax.data import cache_lock\n"
           "with cache_lock.held({directory!r}, 'fetch'):\n  print('held', flush=True); time.sleep(600)\n")


def _try_lock(directory) -> bool:
  with open(os.path.join(directory, ".fetch.lock"), "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return False
    fcntl.flock(f, fcntl.LOCK_UN)
    return True


def test_another_process_waits_while_one_holds_it_and_a_kill_releases_it(tmp_path):
  directory = str(tmp_path / "cache")
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(repo=REPO, directory=directory)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    assert not _try_lock(directory)
  finally:
    holder.kill()
    holder.wait()
  assert _try_lock(directory)  # the kernel dropped the dead holder's lock
  with cache_lock.held(directory, "fetch"):
    assert not _try_lock(directory)  # flock locks are per open file: a second open blocks even here


def test_a_fetch_that_fails_releases_the_lock(tmp_path):
  directory = str(tmp_path / "cache")
  with pytest.raises(RuntimeError):
    with cache_lock.held(directory, "fetch"):
      raise RuntimeError("the fetch failed")
  assert _try_lock(directory)
