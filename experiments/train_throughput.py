"""Training throughput of a config on real batches: tokens/s, achieved FLOP/s, MFU, compile time.

python experiments/train_throughput.py --config=configs/default.py [--steps=20] [--config.x=y ...]

MFU = model FLOPs per second / peak FLOP/s of the devices (tx_jax.training.perf, the same figures
train.py logs as perf/mfu). The peak is --peak_tflops when given, else the vendor's bf16 figure
for a TPU or GPU, else (CPU) *measured* on this machine as the best float32 matmul rate, so on
CPU the MFU says how close the step comes to the matmul roofline. Python's collector is frozen where
train.py freezes it (tx_jax/python_gc.py).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from tx_jax import configuration, parallel, python_gc  # noqa: E402
from tx_jax import tasks  # noqa: E402
from tx_jax.data import pipeline  # noqa: E402
from tx_jax.training import experiment, perf  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Training config.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after the compiling one.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0,
                           "Peak TFLOP/s per device; 0: tx_jax/training/perf.py's table, or on CPU a measured matmul.")


def main(argv):
  del argv
  config = _CONFIG.value
  configuration.validate(config)
  mesh = parallel.make_mesh(config.mesh_shape)
  rows = parallel.global_rows(config)
  task = tasks.get(config)
  batches = task.train_batches(config, task.tokenizer(config, train=True), global_rows=rows)
  python_gc.freeze()  # as tx_jax.train does before it builds and after its first step (tx_jax/python_gc.py)
  _, state, train_fn, _ = experiment.build(config, mesh)
  local = [next(batches) for _ in range(_STEPS.value + 1)]
  t = time.perf_counter()
  state, _ = train_fn(state, parallel.global_batch(local[0], mesh))
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t
  python_gc.freeze()
  tokens = sum(pipeline.count_tokens(b) for b in local[1:])
  step_flops = sum(perf.train_flops(config, b) for b in local[1:])
  t = time.perf_counter()
  for b in local[1:]:
    state, _ = train_fn(state, parallel.global_batch(b, mesh))
  jax.block_until_ready(state)
  seconds = time.perf_counter() - t
  tokens_per_sec = tokens / seconds
  flops = step_flops / seconds
  peak, source = (_PEAK.value * 1e12, "given") if _PEAK.value else perf.peak_flops_per_device()
  if peak is None:
    raise app.UsageError(f"{source}: pass --peak_tflops=<the device's dense peak>.")
  peak *= jax.device_count()
  print(f"config: d={config.emb_dim} layers={config.num_encoder_layers}+{config.num_decoder_layers} "
        f"vocab={config.vocab_size} batch={rows}x{config.max_target_length} devices={jax.device_count()} "
        f"({jax.devices()[0].platform})")
  print(f"compile (first step): {compile_s:.1f} s")
  print(f"step time: {1000 * seconds / _STEPS.value:.0f} ms")
  print(f"tokens/s (non-padding source + target): {tokens_per_sec:,.0f}")
  print(f"model TFLOP/s: {flops / 1e12:.3f}  peak TFLOP/s: {peak / 1e12:.3f} "
        f"({source})  MFU: {100 * flops / peak:.1f} %")


if __name__ == "__main__":
  app.run(main)
