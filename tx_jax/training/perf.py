"""Model FLOPs of a training batch and the peak FLOP/s of a device: the two halves of MFU.

MFU (model FLOPs utilisation) = model FLOPs per second / (peak FLOP/s per device x devices).
Model FLOPs count the matmuls the model needs (not what rematerialisation recomputes); the peak
is the vendor's dense bf16 figure for TPUs and GPUs, and on a CPU, which has no single published
figure, the best float32 matmul rate measured on this machine.
"""

import functools
import time

import jax
import jax.numpy as jnp
from absl import logging

from tx_jax import tasks
from tx_jax.models import config as config_lib

# Dense bf16 peak FLOP/s per JAX device (one chip; v4 and v5p expose a chip's two TensorCores as
# one "megacore" device), from the vendors' spec sheets. Keys are jax.Device.device_kind.
TPU_PEAK_FLOPS = {
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12, "TPU v5e": 197e12,
  "TPU v5": 459e12, "TPU v5p": 459e12,
  "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}
# NVIDIA tensor-core bf16 without sparsity; the first substring of device_kind that matches wins.
GPU_PEAK_FLOPS = (
  ("H100 PCIe", 756e12),
  ("H100 NVL", 835e12),
  ("H100", 989e12),  # SXM
  ("H200", 989e12),
  ("A100", 312e12),  # SXM and PCIe
)


def fastest_seconds(call, repeats: int, clock=time.perf_counter) -> float:
  """Wall seconds of the fastest of `repeats` calls of call(), which must return when its work is done.

  Every call is timed: warm it up (compile, first touch of memory) before. `clock`: seconds now.
  """
  best = float("inf")
  for _ in range(repeats):
    start = clock()
    call()
    best = min(best, clock() - start)
  return best


@functools.cache
def measured_matmul_peak(n: int = 2048, reps: int = 10) -> float:
  """Best float32 [n, n] x [n, n] matmul FLOP/s on the first device (the CPU roofline; cached)."""
  a = jax.device_put(jnp.ones((n, n), jnp.float32), jax.local_devices()[0])
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  return 2 * n ** 3 / fastest_seconds(lambda: f(a).block_until_ready(), reps)


def peak_flops_per_device(device=None) -> tuple[float | None, str]:
  """(peak FLOP/s of one device, where the figure comes from); (None, why) for an unknown accelerator.

  Simulated CPU devices (--xla_force_host_platform_device_count) share the host's cores, so on
  CPU the measured matmul peak is divided among the process's devices.
  """
  device = device or jax.local_devices()[0]
  kind = device.device_kind
  if device.platform == "tpu":
    peak = TPU_PEAK_FLOPS.get(kind)
    return (peak, f"{kind} bf16 dense spec") if peak else (None, f"no peak listed for {kind!r}")
  if device.platform == "gpu":
    peak = next((p for name, p in GPU_PEAK_FLOPS if name in kind), None)
    return (peak, f"{kind} bf16 dense spec") if peak else (None, f"no peak listed for {kind!r}")
  cpus = sum(d.platform == "cpu" for d in jax.local_devices())
  return measured_matmul_peak() / cpus, f"measured float32 matmul / {cpus} CPU device(s)"


def train_flops(config, batch: dict) -> float:
  """Training FLOPs (forward + backward = 3 x forward) of one batch, counting matmuls only.

  Per non-padding token: 2 x the weights it meets in projections, 2 x 2 x row_length x
  (heads x head_dim) for attention scores and mixing (packed rows: masked-out work counted), and
  2 x d x vocab for the output projection where the task has one (each task's forward_flops).
  """
  return 3 * 2 * tasks.get(config).forward_flops(config_lib.ModelConfig.from_config(config), batch)


def residual_bytes(fn, *args) -> int:
  """Bytes the forward pass of `fn(*args)` keeps for its backward pass: what remat policies trade for recompute.

  Read from the abstract VJP (no compile, no FLOPs), so it is the same on every backend. (The
  compiled step's temp size on XLA:CPU does not shrink with remat; experiments/README.md.)
  """
  residuals = jax.eval_shape(lambda *a: jax.vjp(fn, *a)[1], *args)
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(residuals))


def log_peak(peak: float | None, source: str):
  """Logs the peak MFU is measured against (or why there is none)."""
  if peak:
    logging.info("MFU peak: %.3f TFLOP/s per device (%s)", peak / 1e12, source)
  else:
    logging.info("perf/mfu is not logged: %s; add it to tx_jax/training/perf.py", source)
