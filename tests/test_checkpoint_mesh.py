"""A run trained on 8 simulated devices restores on another mesh and on one device, and evaluates the same."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
from conftest import first_train_batch, make_tiny_config, with_fields
from tx_jax import evaluate, parallel, train
from tx_jax.training import checkpoint, experiment

# 16-row global batches on 8 devices; evaluation over the whole split (num_eval_steps=-1), so the
# figures do not depend on how many rows a batch has.
config = make_tiny_config({corpus!r}, {vocab!r}, dropout_rate=0.0, attention_dropout_rate=0.0,
                          per_device_batch_size=2, num_train_steps=3, eval_every_steps=3, checkpoint_every_steps=3,
                          num_eval_steps=-1, num_predict_sentences=0,
                          token_capacity=1.0)  # the padded step on every mesh ("auto" picks per group of rows)
workdir = {workdir!r}

def restore(mesh_shape, devices=None):
  cfg = with_fields(config, mesh_shape=mesh_shape)
  mesh = parallel.make_mesh(mesh_shape, devices)
  _, abstract, train_fn, _ = experiment.build(cfg, mesh, abstract_only=True)
  state, data_state = checkpoint.restore(checkpoint.make_manager(workdir, read_only=True), abstract)
  return mesh, state, train_fn

def flat(state):
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(state))
  return {{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}}
"""

_EIGHT_DEVICES = _PRELUDE + r"""
train.train_and_evaluate(config, workdir)  # mesh (-1, 1, 1) = (8, 1, 1)
mesh8, state8, train8 = restore((-1, 1, 1))
mesh222, state222, train222 = restore((2, 2, 2))
a, b = flat(state8), flat(state222)
out = {{"same_keys": sorted(a) == sorted(b), "max_diff_2x2x2": max(float(np.abs(a[k] - b[k]).max()) for k in a)}}
kernel, = [x for p, x in jax.tree_util.tree_leaves_with_path(state222.params)
           if all(k in jax.tree_util.keystr(p) for k in ("encoder", "feed_forward", "'wi'", "kernel"))]
out["restored_shard"] = list(kernel.sharding.shard_shape(kernel.shape))
np.savez({npz!r}, **a)

# Training continues from the restored state on either mesh: one more step on the same batch.
batch = first_train_batch(config, 16)
for name, mesh, state, fn in (("8x1x1", mesh8, state8, train8), ("2x2x2", mesh222, state222, train222)):
  state, sums = fn(state, parallel.global_batch(batch, mesh))
  out["next_loss_" + name] = float(sums["loss"] / sums["tokens"])
  out["next_step_" + name] = int(state.step)
out["eval"] = evaluate.evaluate(config, workdir, split="test", max_sentences=8)["metrics"]
print(json.dumps(out))
"""

_ONE_DEVICE = _PRELUDE + r"""
saved = dict(np.load({npz!r}))
_, state1, _ = restore((-1, 1, 1))
got = flat(state1)
out = {{"devices": jax.device_count(), "same_keys": sorted(got) == sorted(saved),
        "max_diff": max(float(np.abs(got[k] - saved[k]).max()) for k in saved)}}
out["eval"] = evaluate.evaluate(config, workdir, split="test", max_sentences=8)["metrics"]
print(json.dumps(out))
"""


def _run(script, devices):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(small_corpus_dir, vocab_dir, tmp_path_factory):
  """Train on 8 devices and restore there (subprocess 1), then restore and evaluate on 1 (subprocess 2)."""
  d = tmp_path_factory.mktemp("mesh_checkpoint")
  args = dict(repo=REPO, corpus=small_corpus_dir, vocab=vocab_dir, workdir=str(d / "run"), npz=str(d / "params.npz"))
  eight = _run(_EIGHT_DEVICES.format(**args), 8)
  one = _run(_ONE_DEVICE.format(**args), 1)
  return eight, one


def test_checkpoint_from_8x1x1_restores_on_2x2x2_with_identical_values(runs):
  eight, _ = runs
  assert eight["same_keys"] and eight["max_diff_2x2x2"] == 0.0
  assert eight["restored_shard"] == [16, 32]  # (32, 64) kernel split over fsdp=2 and tensor=2


def test_training_continues_from_the_resharded_checkpoint(runs):
  eight, _ = runs
  assert eight["next_step_8x1x1"] == eight["next_step_2x2x2"] == 4
  np.testing.assert_allclose(eight["next_loss_2x2x2"], eight["next_loss_8x1x1"], rtol=1e-5)  # measured: equal


def test_checkpoint_from_8_devices_restores_on_one_device(runs):
  eight, one = runs
  assert one["devices"] == 1 and one["same_keys"] and one["max_diff"] == 0.0


def test_evaluate_on_one_device_matches_eight(runs):
  eight, one = runs
  for key in ("test/loss", "test/nll", "test/accuracy"):
    np.testing.assert_allclose(one["eval"][key], eight["eval"][key], rtol=1e-5)  # measured: <= 7.4e-8 relative
