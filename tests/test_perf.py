"""MFU ingredients (model FLOPs, device peaks), rematerialisation policies, and the perf/ scalars of a run."""

import math
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import default, lm_default
from tx_jax import parallel, tasks, train
from tx_jax.models import registry
from tx_jax.training import experiment, loop, perf


def _full_batch(rows: int, length: int, vocab_size: int) -> dict:
  """Packed-batch arrays with a token at every position (one sentence per row): no padding."""
  tokens = np.random.default_rng(0).integers(5, vocab_size, (rows, length)).astype(np.int32)
  ones, positions = np.ones_like(tokens), np.tile(np.arange(length, dtype=np.int32), (rows, 1))
  return {"inputs": tokens, "inputs_segment_ids": ones, "inputs_positions": positions, "decoder_inputs": tokens,
          "targets": tokens, "targets_segment_ids": ones, "targets_positions": positions}


@pytest.mark.parametrize("make_config, overrides", [
  (default.get_config, {}),  # encoder-decoder, 3 + 3 layers, d 256
  (lm_default.get_config, {}),  # decoder-only, 4 layers
  (default.get_config, {"task": "mlm", "num_encoder_layers": 4}),
])
def test_model_flops_match_xla_cost_analysis(make_config, overrides):
  config = make_config()
  config.update(dict(max_target_length=128, **overrides))
  mesh = parallel.make_mesh((1, 1, 1))
  _, abstract, train_fn, _ = experiment.build(config, mesh, abstract_only=True)
  batch = _full_batch(8, 128, config.vocab_size)
  compiled = train_fn.lower(abstract, parallel.global_batch(batch, mesh)).compile()
  ratio = perf.train_flops(config, batch) / compiled.cost_analysis()["flops"]
  # XLA also counts the elementwise work (softmax, norms, Adam), so it is slightly higher.
  assert 0.97 <= ratio <= 1.0, ratio  # measured: 0.989 (enc-dec), 0.986 (decoder), 0.988 (mlm)


def test_peak_flops_come_from_the_table_or_a_measurement():
  def peak(platform, kind):
    return perf.peak_flops_per_device(SimpleNamespace(platform=platform, device_kind=kind))[0]

  assert peak("tpu", "TPU v5 lite") == 197e12 and peak("tpu", "TPU v4") == 275e12
  assert peak("tpu", "TPU v6 lite") == 918e12 and peak("tpu", "TPU v5p") == 459e12
  assert peak("gpu", "NVIDIA H100 80GB HBM3") == 989e12 and peak("gpu", "NVIDIA H100 PCIe") == 756e12
  assert peak("gpu", "NVIDIA A100-SXM4-40GB") == 312e12
  assert peak("gpu", "NVIDIA GeForce GTX 1080") is None and peak("tpu", "TPU v2") is None
  measured, source = perf.peak_flops_per_device()  # this machine's CPU
  assert 1e9 < measured < 1e14 and "measured" in source  # measured: ~0.3 TFLOP/s on 2 cores


def test_fastest_seconds_times_every_call_and_keeps_the_fastest():
  """On a fake clock, calls taking 3, 1 and 2 s give 1 s, and the call runs exactly `repeats` times."""
  now = [0.0]
  durations = iter([3.0, 1.0, 2.0])

  def call():
    now[0] += next(durations)

  assert perf.fastest_seconds(call, 3, clock=lambda: now[0]) == 1.0
  assert next(durations, None) is None


def _loss_fn(config, batch):
  """(token-normalised LM loss as a function of the params, the params) of a fresh model."""
  model = registry.build_model(config, nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)

  def loss(params):
    sums = tasks.get("lm").metric_sums(nnx.merge(graphdef, params), batch, label_smoothing=0.0,
                                       deterministic=True)
    return sums["loss"] / sums["tokens"]

  return loss, params


def _lm_config(**overrides):
  config = lm_default.get_config()
  config.update(dict(vocab_size=64, emb_dim=32, num_heads=2, mlp_dim=64, num_decoder_layers=2, max_len=64,
                     max_target_length=32, **overrides))
  return config


@pytest.mark.parametrize("policy", ["full", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable"])
def test_remat_policies_keep_loss_and_gradients(policy):
  batch = jax.tree.map(jnp.asarray, _full_batch(4, 32, 64))
  plain_loss, params = _loss_fn(_lm_config(), batch)
  remat_loss, _ = _loss_fn(_lm_config(remat_policy=policy), batch)
  (a, grads_a), (b, grads_b) = jax.value_and_grad(plain_loss)(params), jax.value_and_grad(remat_loss)(params)
  np.testing.assert_allclose(b, a, rtol=1e-6)
  for x, y in zip(jax.tree.leaves(grads_b), jax.tree.leaves(grads_a)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_remat_policies_shrink_what_the_forward_pass_keeps():
  batch = jax.tree.map(jnp.asarray, _full_batch(8, 32, 64))
  saved = {}
  for name, overrides in [("none", {}), ("dots_saveable", {"remat_policy": "dots_saveable"}),
                          ("dots_with_no_batch_dims_saveable", {"remat_policy": "dots_with_no_batch_dims_saveable"}),
                          ("full", {"remat_policy": "full"}), ("remat=True", {"remat": True})]:
    loss, params = _loss_fn(_lm_config(**overrides), batch)
    saved[name] = perf.residual_bytes(loss, params)
  assert saved["none"] > saved["dots_saveable"] > saved["dots_with_no_batch_dims_saveable"] > saved["full"]
  assert saved["remat=True"] == saved["full"]


def test_perf_scalars_in_tensorboard(tiny_config, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  workdir = str(tmp_path / "run")
  tiny_config.num_predict_sentences = 0
  train.train_and_evaluate(tiny_config, workdir)
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  acc.Reload()
  last = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag.startswith("perf/")}
  assert set(last) >= {"perf/tokens_per_sec", "perf/tokens_per_sec_per_device", "perf/mfu", "perf/step_seconds",
                       "perf/first_step_seconds", "perf/steps_per_sec"}
  assert last.pop("perf/share_compile_seconds") >= 0.0  # steps compiled mid-run for a new token_capacity share
  assert all(math.isfinite(v) and v > 0 for v in last.values())
  assert last["perf/tokens_per_sec_per_device"] == pytest.approx(last["perf/tokens_per_sec"] / jax.device_count())
  assert last["perf/step_seconds"] == pytest.approx(1 / last["perf/steps_per_sec"], rel=1e-3)
  assert last["perf/mfu"] < 1.0


def test_the_window_rates_leave_out_compiles_and_pauses_but_keep_every_step():
  now = [100.0]
  window = loop.Window(clock=lambda: now[0])
  sums = {"loss": 2.0, "nll": 2.0, "correct": 1.0, "tokens": 10.0, "steps": 1.0, "grad_norm": 1.0,
          "learning_rate": 0.1}
  for seconds, compiling, pause in ((1.0, 0.0, 0.0), (9.0, 8.0, 0.0), (1.0, 0.0, 30.0), (1.0, 0.0, 0.0)):
    window.add_batch(10, 1e9, 0.0)
    now[0] += seconds
    window.add_step(sums, seconds, compile_seconds=compiling)  # the second step compiled its share first
    with window.paused():  # a checkpoint or an evaluation after the third, with a save inside it
      now[0] += pause / 2
      with window.paused():
        now[0] += pause / 2
  summary = window.summary(device_count=1, peak_flops=None)
  assert summary["perf/share_compile_seconds"] == 8.0
  assert summary["perf/tokens_per_sec"] == 40 / 4.0 and summary["perf/step_seconds"] == 1.0
  assert summary["perf/max_step_seconds"] == 1.0
