"""Two processes on localhost (jax.distributed, gloo CPU collectives, 2 devices each) train like one process of 4."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tx_jax import parallel
from tx_jax.training import checkpoint, experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run through tx_jax.train's own entry: distributed start-up from TX_JAX_* (before any device is
# touched), each process reading its own data shard (half of every global batch), process 0 writing TensorBoard,
# both writing their checkpoint shards.
_SCRIPT = r"""
import json, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
from tx_jax import parallel
started = parallel.maybe_initialize_distributed()
import jax
from conftest import make_tiny_config
from tx_jax import train

config = make_tiny_config({corpus!r}, {vocab!r}, dropout_rate=0.0, attention_dropout_rate=0.0, learning_rate=0.003,
                          warmup_steps=0, per_device_batch_size=4, num_train_steps=4, log_every_steps=2,
                          eval_every_steps=4, checkpoint_every_steps=4, num_eval_steps=-1, parallelism={parallelism!r},
                          data_shards=2,  # two logical data shards: one per process, or both in one process
                          token_capacity=1.0)  # padded in both ("auto" computes the padding with two processes)
summary = train.train_and_evaluate(config, {workdir!r})
print(json.dumps({{"started": started, "process": jax.process_index(), "processes": jax.process_count(),
                  "devices": jax.device_count(), "local_devices": jax.local_device_count(),
                  "summary": {{k: float(v) for k, v in summary.items()}}}}))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(script, devices, extra_env):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra_env)
  for key in ("TX_JAX_COORDINATOR", "TX_JAX_NUM_PROCESSES", "TX_JAX_PROCESS_ID"):
    if key not in extra_env:
      env.pop(key, None)
  return subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _result(proc, timeout=600):
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"process timed out:\n{err[-3000:]}")
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def _final_params(workdir, config_overrides, small_corpus_dir, vocab_dir):
  from conftest import make_tiny_config
  config = make_tiny_config(small_corpus_dir, vocab_dir, **config_overrides)
  mesh = parallel.make_mesh((-1, 1, 1))
  _, abstract, _, _ = experiment.build(config, mesh, abstract_only=True)
  state, data_state = checkpoint.restore(checkpoint.make_manager(workdir, read_only=True), abstract)
  return jax.device_get(state), data_state


@pytest.mark.slow
@pytest.mark.parametrize("parallelism", ["jit", "pmap"])
def test_two_processes_match_one_process_of_four_devices(small_corpus_dir, vocab_dir, tmp_path, parallelism):
  fmt = dict(repo=REPO, corpus=small_corpus_dir, vocab=vocab_dir, parallelism=parallelism)
  coordinator = f"localhost:{_free_port()}"
  procs = [_launch(_SCRIPT.format(workdir=str(tmp_path / "two"), **fmt), 2,
                   {"TX_JAX_COORDINATOR": coordinator, "TX_JAX_NUM_PROCESSES": "2", "TX_JAX_PROCESS_ID": str(i)})
           for i in range(2)]
  two = [_result(p) for p in procs]
  one = _result(_launch(_SCRIPT.format(workdir=str(tmp_path / "one"), **fmt), 4, {}))

  assert [r["process"] for r in two] == [0, 1] and all(r["started"] for r in two) and not one["started"]
  assert all(r["processes"] == 2 and r["devices"] == 4 and r["local_devices"] == 2 for r in two)
  for key in ("train/loss", "train/accuracy", "train/grad_norm", "eval/loss", "eval/accuracy"):
    for r in two:  # every process sees the global metrics
      np.testing.assert_allclose(r["summary"][key], one["summary"][key], rtol=1e-5)  # measured: see README
  # Only process 0 writes TensorBoard; both processes wrote checkpoint shards that restore here.
  assert len(os.listdir(tmp_path / "two" / "tensorboard")) == 1
  overrides = {"parallelism": parallelism, "data_shards": 2}
  a, data_a = _final_params(str(tmp_path / "two"), overrides, small_corpus_dir, vocab_dir)
  b, data_b = _final_params(str(tmp_path / "one"), overrides, small_corpus_dir, vocab_dir)
  assert int(a.step) == int(b.step) == 4 and data_a == data_b
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a.params), jax.tree.leaves(b.params)):
    if "key" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path):
      continue  # zero gradient in exact arithmetic: Adam turns its rounding noise into +-lr (test_parallel.py)
    np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


_LONG_RUN = _SCRIPT.replace("num_train_steps=4, log_every_steps=2,", "num_train_steps={steps}, log_every_steps=2,") \
  .replace("eval_every_steps=4, checkpoint_every_steps=4,", "eval_every_steps=10_000, checkpoint_every_steps=10_000, "
           "log_batches=True,")


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step_and_the_restart_continues(small_corpus_dir, vocab_dir,
                                                                                      tmp_path):
  import signal
  import time
  workdir = tmp_path / "run"
  fmt = dict(repo=REPO, corpus=small_corpus_dir, vocab=vocab_dir, parallelism="jit", workdir=str(workdir))

  def launch(steps):
    coordinator = f"localhost:{_free_port()}"
    return [_launch(_LONG_RUN.format(steps=steps, **fmt), 2, {"TX_JAX_COORDINATOR": coordinator,
                                                              "TX_JAX_NUM_PROCESSES": "2", "TX_JAX_PROCESS_ID": str(i)})
            for i in range(2)]

  procs = launch(10_000)
  log = workdir / "batches_process0.jsonl"
  deadline = time.time() + 300
  while not (log.exists() and len(log.read_text().splitlines()) >= 3):
    assert time.time() < deadline and all(p.poll() is None for p in procs), "the run did not start"
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)  # only the second process is told: both must stop after the same step
  results = [_result(p) for p in procs]
  stops = [int(r["summary"]["stopped_at_step"]) for r in results]
  assert stops[0] == stops[1] and 3 <= stops[0] < 10_000
  stop = stops[0]
  assert checkpoint.make_manager(str(workdir), read_only=True).latest_step() == stop

  restarted = [_result(p) for p in launch(stop + 2)]  # both continue from the saved step
  assert all("stopped_at_step" not in r["summary"] for r in restarted)
  assert checkpoint.make_manager(str(workdir), read_only=True).latest_step() == stop + 2
  fed = [json.loads(line)["step"] for line in log.read_text().splitlines()]
  assert fed[-2:] == [stop + 1, stop + 2] and fed.count(stop + 1) == 1  # no step trained twice
