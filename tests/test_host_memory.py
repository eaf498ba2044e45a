"""The tuned malloc: its tunables are added once, the user's own malloc setting wins, and it does stop the page faults."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import tiny_config_file
from tx_jax import host_memory, xla_options

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tuned_malloc = pytest.mark.skipif(not host_memory.tuned_malloc_available(),
                                        reason="needs Linux with glibc and jax on the CPU")
TUNED = ":".join(host_memory.TUNABLES)


def test_the_tunables_are_added_beside_the_users_and_never_over_their_own_malloc_setting():
  assert host_memory.with_tuned_malloc({})["GLIBC_TUNABLES"] == TUNED
  assert TUNED == "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
  assert host_memory.with_tuned_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0", "X": "y"}) == {
    "GLIBC_TUNABLES": "glibc.pthread.rseq=0:" + TUNED, "X": "y"}
  assert host_memory.with_tuned_malloc({"GLIBC_TUNABLES": "glibc.malloc.arena_max=8"}) is None  # opted out
  assert host_memory.with_tuned_malloc({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) is None  # the user's own choice
  assert host_memory.with_tuned_malloc({"GLIBC_TUNABLES": TUNED}) is None  # restarted already


def test_taking_the_tunables_out_keeps_the_users_other_tunables():
  assert host_memory.without_tuned_malloc({"GLIBC_TUNABLES": TUNED, "X": "y"}) == {"X": "y"}
  assert host_memory.without_tuned_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0:" + TUNED + ":glibc.mem.tagging=0"}) \
    == {"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.mem.tagging=0"}
  assert host_memory.without_tuned_malloc({"X": "y"}) == {"X": "y"}
  round_trip = host_memory.with_tuned_malloc({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
  assert host_memory.without_tuned_malloc(round_trip) == {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's tunables are Linux's")
def test_a_process_bound_for_an_accelerator_keeps_glibcs_default():
  assert not host_memory.tuned_malloc_available({"JAX_PLATFORMS": "cuda"})
  assert not host_memory.tuned_malloc_available({"JAX_PLATFORMS": "tpu,cpu"})
  assert host_memory.environment_for_children({"JAX_PLATFORMS": "cuda"}) == {"JAX_PLATFORMS": "cuda"}


# Runs in a child: restarts itself with the tuned malloc, then reports its arguments, its tunables and
# the minor page faults of 64 MB malloc'ed, written and freed 8 times (as XLA:CPU does with a step's buffers)
# on a thread of its own (as XLA:CPU's threads do).
_PROBE = textwrap.dedent("""
  import ctypes, json, os, resource, sys
  sys.path.insert(0, {repo!r})
  from tx_jax import host_memory
  print("started", flush=True)
  host_memory.restart_with_tuned_malloc()
  import threading
  libc = ctypes.CDLL("libc.so.6")
  libc.malloc.restype = ctypes.c_void_p
  size, before = 64 << 20, resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  def steps():
    for _ in range(8):
      buffer = libc.malloc(size)
      ctypes.memset(buffer, 1, size)
      libc.free(ctypes.c_void_p(buffer))
  thread = threading.Thread(target=steps)
  thread.start()
  thread.join()
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


@needs_tuned_malloc
def test_a_restarted_process_keeps_its_arguments_and_faults_its_buffer_in_only_once(tmp_path):
  environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}  # whatever the test run was started with
  environ["GLIBC_TUNABLES"] = "glibc.pthread.rseq=1"  # a tunable of another part of glibc, to be kept
  before, restarted = _probe(tmp_path, environ)
  assert before == ["started", "started"]  # re-executed exactly once
  assert restarted["argv"] == ["an argument", "--a=flag"]
  assert restarted["tunables"] == "glibc.pthread.rseq=1:" + TUNED
  before, plain = _probe(tmp_path, dict(environ, GLIBC_TUNABLES="glibc.malloc.arena_max=8"))  # the user's opt-out
  assert before == ["started"] and plain["tunables"] == "glibc.malloc.arena_max=8"
  # glibc's default maps every 64 MB buffer afresh in 4 KB pages: 8 x 16,384 faults; the tuned
  # malloc faults the first one in and reuses its pages.
  assert plain["faults"] >= 8 * 16384 * 0.9
  assert restarted["faults"] < 2 * 16384


@needs_tuned_malloc
def test_the_train_entry_point_runs_with_the_tuned_malloc_and_says_so(tmp_path, small_corpus_dir, vocab_dir):
  environ = host_memory.without_tuned_malloc(os.environ)
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir, num_train_steps=1, eval_every_steps=1000)
  done = subprocess.run([sys.executable, "-m", "tx_jax.train", f"--config={config_file}",
                         f"--workdir={tmp_path / 'run'}"], cwd=REPO, env=environ, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  tunables = host_memory.with_tuned_malloc(environ)["GLIBC_TUNABLES"]
  assert f"Host malloc: glibc, one arena that keeps freed memory (GLIBC_TUNABLES={tunables})" in done.stderr
  assert f"XLA compile options: {xla_options.describe()}" in done.stderr  # as this process would compile
  frozen = re.search(r"Froze (\d+) objects alive after the first step", done.stderr)
  assert frozen and int(frozen.group(1)) > 10_000, done.stderr[-2000:]  # tx_jax/python_gc.py


def test_a_config_error_is_still_one_line_before_any_malloc_report(tmp_path):
  done = subprocess.run([sys.executable, "-m", "tx_jax.train", "--config=configs/default.py", f"--workdir={tmp_path}",
                         "--config.dropout_rate=2.0"], cwd=REPO, capture_output=True, text=True, timeout=300)
  lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
  assert done.returncode != 0 and len(lines) == 1 and "dropout_rate" in lines[0], done.stderr[-2000:]


@pytest.mark.parametrize("argv, default, expected", [
  (["x"], True, True),
  (["x"], False, False),
  (["x", "--tuned_malloc"], False, True),
  (["x", "-tuned_malloc"], False, True),
  (["x", "--tuned_malloc=true"], False, True),
  (["x", "--tuned_malloc=1"], False, True),
  (["x", "--notuned_malloc"], True, False),
  (["x", "-notuned_malloc"], True, False),
  (["x", "--tuned_malloc=false"], True, False),
  (["x", "--tuned_malloc=No"], True, False),
  (["x", "--tuned_malloc", "--notuned_malloc"], False, False),  # the last one wins, as in absl
  (["x", "--", "--tuned_malloc"], False, False),  # after --: not a flag
  (["x", "tuned_malloc"], False, False),  # not a flag either
  (["x", "--tuned_malloc_extra=1", "--repeats=5"], False, False),
])
def test_the_benchmarks_read_their_malloc_flag_as_absl_would(argv, default, expected):
  assert host_memory.requested(argv, default) is expected
