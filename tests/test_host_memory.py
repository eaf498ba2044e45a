"""Huge-page malloc: the tunable is added once, the user's own setting wins, and it does cut the page faults."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import tiny_config_file
from tx_jax import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_huge_pages = pytest.mark.skipif(not host_memory.huge_page_malloc_available(),
                                      reason="needs Linux, glibc >= 2.35 and transparent huge pages")


def test_the_tunable_is_added_beside_the_users_and_never_over_their_own_value():
  assert host_memory.with_huge_pages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  assert host_memory.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "y"}) == {
    "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "X": "y"}
  assert host_memory.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # opted out
  assert host_memory.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) is None  # restarted already


def test_taking_the_tunable_out_keeps_the_users_other_tunables():
  assert host_memory.without_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "X": "y"}) == {"X": "y"}
  assert host_memory.without_huge_pages(
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1:glibc.malloc.top_pad=0"}) == {
    "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.top_pad=0"}
  assert host_memory.without_huge_pages({"X": "y"}) == {"X": "y"}
  round_trip = host_memory.with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert host_memory.without_huge_pages(round_trip) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}


# Runs in a child: restarts itself with huge-page malloc, then reports its arguments, its tunables and
# the minor page faults of 64 MB malloc'ed, written and freed 8 times (as XLA:CPU does with a step's buffers).
_PROBE = textwrap.dedent("""
  import ctypes, json, os, resource, sys
  sys.path.insert(0, {repo!r})
  from tx_jax import host_memory
  print("started", flush=True)
  host_memory.restart_with_huge_pages()
  libc = ctypes.CDLL("libc.so.6")
  libc.malloc.restype = ctypes.c_void_p
  size, before = 64 << 20, resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(8):
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)
    libc.free(ctypes.c_void_p(buffer))
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
  print(json.dumps(dict(argv=sys.argv[1:], tunables=os.environ.get("GLIBC_TUNABLES"), faults=faults)))
""")


def _probe(tmp_path, environ):
  """(lines printed before the last, the child's report) of the probe run with `environ`."""
  script = tmp_path / "probe.py"
  script.write_text(_PROBE.format(repo=REPO))
  done = subprocess.run([sys.executable, str(script), "an argument", "--a=flag"], env=environ, capture_output=True,
                        text=True, check=True, timeout=120)
  *before, report = done.stdout.splitlines()
  return before, json.loads(report)


@needs_huge_pages
def test_a_restarted_process_keeps_its_arguments_and_faults_in_far_fewer_pages(tmp_path):
  environ = host_memory.without_huge_pages(os.environ)  # whatever the test run itself was started with
  before, restarted = _probe(tmp_path, environ)
  assert before == ["started", "started"]  # re-executed exactly once
  assert restarted["argv"] == ["an argument", "--a=flag"]
  assert restarted["tunables"] == host_memory.with_huge_pages(environ)["GLIBC_TUNABLES"]  # the user's others kept
  before, plain = _probe(tmp_path, dict(environ, GLIBC_TUNABLES="glibc.malloc.hugetlb=0"))  # the user's opt-out
  assert before == ["started"] and plain["tunables"] == "glibc.malloc.hugetlb=0"
  # glibc's default maps every 64 MB buffer afresh in 4 KB pages: 8 x 16,384 faults.
  assert plain["faults"] >= 8 * 16384 * 0.9
  assert restarted["faults"] < plain["faults"] / 4


@needs_huge_pages
def test_the_train_entry_point_runs_with_huge_page_malloc_and_says_so(tmp_path, small_corpus_dir, vocab_dir):
  environ = host_memory.without_huge_pages(os.environ)
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir, num_train_steps=1, eval_every_steps=1000)
  done = subprocess.run([sys.executable, "-m", "tx_jax.train", f"--config={config_file}",
                         f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=environ, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  tunables = host_memory.with_huge_pages(environ)["GLIBC_TUNABLES"]
  assert f"Host malloc: glibc with transparent huge pages (GLIBC_TUNABLES={tunables})" in done.stderr


def test_a_config_error_is_still_one_line_before_any_malloc_report(tmp_path):
  done = subprocess.run([sys.executable, "-m", "tx_jax.train", "--config=configs/default.py", f"--workdir={tmp_path}",
                         "--config.dropout_rate=2.0"], cwd=REPO, capture_output=True, text=True, timeout=300)
  lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
  assert done.returncode != 0 and len(lines) == 1 and "dropout_rate" in lines[0], done.stderr[-2000:]
