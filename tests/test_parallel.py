"""Data-parallel training over a mesh of simulated CPU devices matches one device."""

import json
import os
import subprocess
import sys

import pytest

from tx_jax import errors, parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
from conftest import make_tiny_config
from tx_jax import parallel
from tx_jax.data import pipeline, task_data
from tx_jax.training import experiment

config = make_tiny_config({corpus!r}, {vocab!r}, dropout_rate=0.0, attention_dropout_rate=0.0)
data = task_data.load(config, splits=("train",))
batches = pipeline.TrainBatches(data.train, global_rows=8, row_length=64, seed=0)
local = [next(batches) for _ in range(3)]
losses = {{}}
for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
  mesh = parallel.make_mesh((-1, 1, 1), devices)
  _, state, train_fn, _ = experiment.build(config, mesh)
  for b in local:
    state, sums = train_fn(state, parallel.global_batch(b, mesh))
  losses[name] = float(sums["loss"] / sums["tokens"])
  losses[name + "_batch_shards"] = len(parallel.global_batch(local[0], mesh)["inputs"].addressable_shards)
print(json.dumps(losses))
"""


def test_four_device_data_parallel_matches_one_device(small_corpus_dir, vocab_dir):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  script = _SCRIPT.format(repo=REPO, corpus=small_corpus_dir, vocab=vocab_dir)
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  losses = json.loads(out.stdout.strip().splitlines()[-1])
  assert losses["four_batch_shards"] == 4 and losses["one_batch_shards"] == 1
  assert abs(losses["four"] - losses["one"]) <= 1e-5 * abs(losses["one"])


def test_mesh_shape_that_does_not_fit_names_the_field():
  with pytest.raises(errors.ConfigError, match="config.mesh_shape"):
    parallel.make_mesh((2, 1, 1))  # one CPU device in this process
