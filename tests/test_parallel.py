"""Training over meshes of simulated CPU devices, with jit or pmap and gradient accumulation, matches one device."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tx_jax import configuration, errors, parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
from conftest import first_train_batch, make_tiny_config
from tx_jax import parallel, tasks
from tx_jax.training import experiment

config = make_tiny_config({corpus!r}, {vocab!r}, dropout_rate=0.0, attention_dropout_rate=0.0)
task = tasks.get(config)
batches = task.train_batches(config, task.tokenizer(config, train=True), global_rows=8)
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


# Eight simulated devices; every run trains the same 4 global batches of 16 packed rows from the
# same initialisation, without dropout, and is compared with one device after the 4th step.
_SCALING_SCRIPT = r"""
import json, sys
import jax, numpy as np
sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
from conftest import make_tiny_config, with_fields
from tx_jax import errors, parallel, tasks
from tx_jax.models import registry
from tx_jax.training import experiment, schedules
from tx_jax.training import step as step_lib

config = make_tiny_config({corpus!r}, {vocab!r}, dropout_rate=0.0, attention_dropout_rate=0.0,
                          learning_rate=0.003, warmup_steps=0, token_capacity=1.0)  # padded unless a run says
task = tasks.get(config)
batches = task.train_batches(config, task.tokenizer(config, train=True), global_rows=16)
local = [next(batches) for _ in range(4)]

def train(mesh_shape, devices, **overrides):
  cfg = with_fields(config, **overrides)
  mesh = parallel.make_mesh(mesh_shape, devices)
  _, state, train_fn, _ = experiment.build(cfg, mesh)
  for b in local:
    state, sums = train_fn(state, parallel.global_batch(b, mesh))
  return float(sums["loss"] / sums["tokens"]), state

def max_diff(a, b):
  # Attention key biases are skipped: their gradient is exactly zero in exact arithmetic (softmax
  # ignores a shift shared by all keys), so it is pure rounding noise that Adam scales to +-lr.
  return max(float(np.abs(x - y).max()) for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a),
                                                                 jax.tree.leaves(b))
             if not ("key" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path)))

one = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
init_params = jax.device_get(experiment.build(config, one)[1].params)
ref_loss, ref_state = train((1, 1, 1), jax.devices()[:1])
ref_params = jax.device_get(ref_state.params)
out = {{"one": {{"loss": ref_loss, "moved": max_diff(init_params, ref_params)}}}}
runs = {{"8x1x1": ((8, 1, 1), {{}}), "2x4x1": ((2, 4, 1), {{}}), "2x2x2": ((2, 2, 2), {{}}),
        "pmap": ((-1, 1, 1), {{"parallelism": "pmap"}}),
        "2x2x2_accum2": ((2, 2, 2), {{"grad_accum_steps": 2}}), "2x2x2_accum4": ((2, 2, 2), {{"grad_accum_steps": 4}}),
        "pmap_accum2": ((-1, 1, 1), {{"parallelism": "pmap", "grad_accum_steps": 2}}),
        # Without padding (tx_jax.models.token_layout): capacity 0.99 rounds up to every slot, so each
        # batch fits and the layouts' gathers and scatters run, in groups of one device's rows.
        "2x2x2_tokens": ((2, 2, 2), {{"token_capacity": 0.99}}),
        "8x1x1_tokens_accum2": ((8, 1, 1), {{"token_capacity": 0.99, "grad_accum_steps": 2}}),
        "pmap_tokens": ((-1, 1, 1), {{"parallelism": "pmap", "token_capacity": 0.99}})}}
for name, (shape, overrides) in runs.items():
  loss, state = train(shape, jax.devices(), **overrides)
  out[name] = {{"loss": loss, "param_diff": max_diff(ref_params, jax.device_get(state.params)),
               "state_mesh_axes": sorted({{tuple(x.sharding.mesh.axis_names) for x in jax.tree.leaves(state)}})}}
  if name == "2x2x2":
    (path, kernel), = [(p, x) for p, x in jax.tree_util.tree_leaves_with_path(state.params)
                       if "feed_forward" in jax.tree_util.keystr(p) and "wi" in jax.tree_util.keystr(p)
                       and "kernel" in jax.tree_util.keystr(p) and "encoder" in jax.tree_util.keystr(p)]
    out["mlp_kernel"] = {{"global": list(kernel.shape), "shard": list(kernel.sharding.shard_shape(kernel.shape)),
                         "spec": list(kernel.sharding.spec), "shards": len(kernel.addressable_shards)}}
for shape in [(2, 2, 2), (1, 4, 2)]:  # the initial state is created in the shardings it declares
  mesh = parallel.make_mesh(shape)
  _, state, _, _ = experiment.build(config, mesh)
  _, _, declared, _ = step_lib.plan_train_state(
    lambda rngs: registry.build_model(config, rngs), schedules.make_optimizer(config, schedules.make_schedule(config)),
    config.seed, mesh)
  pairs = list(zip(jax.tree.leaves(state), jax.tree.leaves(declared), strict=True))
  out["init_as_declared"] = out.get("init_as_declared", []) + [
    [len(pairs), sum(x.sharding.is_equivalent_to(s, x.ndim) for x, s in pairs),
     sum(len(s.spec) > 0 and any(a is not None for a in s.spec) for _, s in pairs)]]
try:
  experiment.build(with_fields(config, parallelism="pmap"), parallel.make_mesh((2, 2, 2)))
  out["pmap_on_2x2x2"] = "no error"
except errors.ConfigError as e:
  out["pmap_on_2x2x2"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def eight_device_runs(small_corpus_dir, vocab_dir):
  """Losses and parameter differences of the 8-device runs against one device (one subprocess)."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  script = _SCALING_SCRIPT.format(repo=REPO, corpus=small_corpus_dir, vocab=vocab_dir)
  out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("run", ["8x1x1", "2x4x1", "2x2x2", "pmap", "2x2x2_tokens", "8x1x1_tokens_accum2",
                                 "pmap_tokens"])
def test_eight_devices_match_one_device(eight_device_runs, run):
  one, got = eight_device_runs["one"], eight_device_runs[run]
  assert one["moved"] > 1e-3  # the 4 steps really change the parameters (lr 3e-3)
  np.testing.assert_allclose(got["loss"], one["loss"], rtol=1e-5)  # measured: 2.3e-7 relative
  assert got["param_diff"] <= 1e-5  # max |difference| over the parameters; measured: <= 4.3e-7


def test_parameters_are_split_over_fsdp_and_tensor(eight_device_runs):
  kernel = eight_device_runs["mlp_kernel"]  # encoder feed-forward wi: (embed -> fsdp, mlp -> tensor)
  assert kernel["global"] == [32, 64] and kernel["shard"] == [16, 32] and kernel["shards"] == 8
  assert kernel["spec"] == ["fsdp", "tensor"]


def test_initial_state_is_created_in_its_declared_shardings(eight_device_runs):
  for leaves, as_declared, split in eight_device_runs["init_as_declared"]:  # meshes 2x2x2 and 1x4x2
    assert as_declared == leaves  # every parameter, moment, step and key where plan_train_state says
    assert split > 0  # and some of them really are split over the mesh


@pytest.mark.parametrize("run", ["2x2x2_accum2", "2x2x2_accum4", "pmap_accum2"])
def test_gradient_accumulation_equals_the_larger_batch(eight_device_runs, run):
  # k microbatches of 16 / k rows each, against single steps on all 16 rows. Measured: loss 2.3e-7
  # relative, parameters <= 5.8e-7; averaging per-microbatch normalised gradients instead is off
  # by 8.6e-5 (loss) and 8e-3 (parameters), so the tolerances tell the two apart.
  one, got = eight_device_runs["one"], eight_device_runs[run]
  np.testing.assert_allclose(got["loss"], one["loss"], rtol=1e-5)
  assert got["param_diff"] <= 1e-5


def test_pmap_state_keeps_the_jit_layout(eight_device_runs):
  # Replicated on the (data, fsdp, tensor) mesh, as jit keeps it: checkpoints need no conversion,
  # and the pmapped step sees one input sharding, so it compiles once.
  assert eight_device_runs["pmap"]["state_mesh_axes"] == [["data", "fsdp", "tensor"]]


def test_pmap_on_a_sharded_mesh_is_a_config_error(eight_device_runs):
  assert eight_device_runs["pmap_on_2x2x2"].startswith("config.parallelism='pmap'")


@pytest.mark.parametrize("overrides, field", [
  ({"grad_accum_steps": 3}, "config.grad_accum_steps"),  # does not divide per_device_batch_size=8
  ({"parallelism": "pmap", "mesh_shape": (2, 2, 2)}, "config.mesh_shape"),
  ({"parallelism": "pmapp"}, "config.parallelism"),
  ({"remat_policy": "dots"}, "config.remat_policy"),
  ({"token_capacity": 0.0}, "config.token_capacity"),
  ({"token_capacity": 1.5}, "config.token_capacity"),
  ({"token_capacity": "half"}, "config.token_capacity"),  # a number or "auto"
  ({"pad_id": 1_000_000}, "config.pad_id"),  # not a token of the vocabulary: its embedding would be NaN
])
def test_scaling_config_mistakes_name_the_field(tiny_config, overrides, field):
  tiny_config.update(overrides)
  with pytest.raises(errors.ConfigError, match=field.replace(".", r"\.")):
    configuration.validate(tiny_config)


def test_distributed_without_coordinator_is_a_config_error(monkeypatch):
  monkeypatch.setenv("TX_JAX_NUM_PROCESSES", "2")
  monkeypatch.delenv("TX_JAX_COORDINATOR", raising=False)
  with pytest.raises(errors.ConfigError, match="TX_JAX_COORDINATOR"):
    parallel.maybe_initialize_distributed()
