"""Training throughput of a config on real batches: tokens/s, achieved FLOP/s, MFU, compile time.

python experiments/train_throughput.py --config=configs/default.py [--steps=20] [--config.x=y ...]

MFU = model FLOPs per second / peak FLOP/s of the device. The peak is --peak_tflops when given;
otherwise it is *measured* on this machine as the best float32 matmul rate (a CPU has no single
published figure), so on CPU the MFU says how close the step comes to the matmul roofline.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from tx_jax import configuration, parallel  # noqa: E402
from tx_jax.data import pipeline, task_data  # noqa: E402
from tx_jax.training import experiment  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Training config.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after the compiling one.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s per device; 0: measure a matmul here.")


def measured_matmul_peak(n: int = 2048, reps: int = 10) -> float:
  """Best float32 matmul FLOP/s of one device, the roofline used for CPU MFU."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def train_flops(config, source_tokens: int, target_tokens: int) -> float:
  """Training FLOPs (forward + backward = 3x forward) of a batch, counting matmuls only.

  Per token: 2 x the weights it meets in projections, 2 x 2 x row_length x d for attention
  scores and mixing (packed rows; masked work is counted), and the output projection on targets.
  """
  d, f, v, n = config.emb_dim, config.mlp_dim, config.vocab_size, config.max_target_length
  kv = (config.num_kv_heads or config.num_heads) * (d // config.num_heads)
  attn_proj = 2 * d * d + 2 * d * kv  # q, out + k, v
  ffn = 2 * d * f if config.activation != "swiglu" else 3 * d * f
  attn_scores = 2 * n * d  # QK^T and weights x V, per query token
  encoder = config.num_encoder_layers * (attn_proj + ffn + attn_scores)
  decoder = config.num_decoder_layers * (2 * attn_proj + ffn + 2 * attn_scores) + d * v
  return 3 * 2 * (encoder * source_tokens + decoder * target_tokens)


def main(argv):
  del argv
  config = _CONFIG.value
  configuration.validate(config)
  mesh = parallel.make_mesh(config.mesh_shape)
  data = task_data.load(config, splits=("train",))
  rows = config.per_device_batch_size * jax.device_count()
  batches = pipeline.TrainBatches(data.train, global_rows=rows, row_length=config.max_target_length, seed=0)
  _, state, train_fn, _ = experiment.build(config, mesh)
  local = [next(batches) for _ in range(_STEPS.value + 1)]
  t = time.perf_counter()
  state, _ = train_fn(state, parallel.global_batch(local[0], mesh))
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - t
  source_tokens = sum(int((b["inputs"] != 0).sum()) for b in local[1:])
  target_tokens = sum(int((b["targets"] != 0).sum()) for b in local[1:])
  tokens = source_tokens + target_tokens
  t = time.perf_counter()
  for b in local[1:]:
    state, _ = train_fn(state, parallel.global_batch(b, mesh))
  jax.block_until_ready(state)
  seconds = time.perf_counter() - t
  tokens_per_sec = tokens / seconds
  flops = train_flops(config, source_tokens, target_tokens) / seconds
  peak = _PEAK.value * 1e12 * jax.device_count() if _PEAK.value else measured_matmul_peak() * jax.device_count()
  print(f"config: d={config.emb_dim} layers={config.num_encoder_layers}+{config.num_decoder_layers} "
        f"vocab={config.vocab_size} batch={rows}x{config.max_target_length} devices={jax.device_count()} "
        f"({jax.devices()[0].platform})")
  print(f"compile (first step): {compile_s:.1f} s")
  print(f"step time: {1000 * seconds / _STEPS.value:.0f} ms")
  print(f"tokens/s (non-padding source + target): {tokens_per_sec:,.0f}")
  print(f"model TFLOP/s: {flops / 1e12:.3f}  peak TFLOP/s: {peak / 1e12:.3f} "
        f"({'given' if _PEAK.value else 'measured matmul'})  MFU: {100 * flops / peak:.1f} %")


if __name__ == "__main__":
  app.run(main)
