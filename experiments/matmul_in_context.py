"""The base training step's matmuls alone and as the step meets them, float32, in GFLOP/s.

python experiments/matmul_in_context.py [--tokens=2048] [--d_model=512] [--d_ff=2048] [--layers=12]

Each product of a base-shape feed-forward layer (the step's largest; batch 32 x 64 tokens) is timed
two ways with XLA:CPU:
- alone: one product on the same operands again and again, hot in cache, the way a matmul ceiling
  (train_vs_peers.py's) is measured;
- in a step: `--layers` such products on distinct operands in one jit, independent of each other
  like the layers' kernel gradients, so XLA runs them side by side and each reads its operands from
  memory.
The ratio of the two is how far below the ceiling a step made only of these products would run.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from tx_jax.training import perf  # noqa: E402

_TOKENS = flags.DEFINE_integer("tokens", 2048, "Tokens per batch (32 sentences x 64).")
_D_MODEL = flags.DEFINE_integer("d_model", 512, "Model width.")
_D_FF = flags.DEFINE_integer("d_ff", 2048, "Feed-forward width.")
_LAYERS = flags.DEFINE_integer("layers", 12, "Products on distinct operands for 'in a step' (6 + 6 layers).")
_REPEATS = flags.DEFINE_integer("repeats", 8, "Timed calls; the fastest is reported.")


def dot(a, b, a_axis: int, b_axis: int):
  """a and b contracted on one axis each, float32."""
  return jax.lax.dot_general(a, b, (((a_axis,), (b_axis,)), ((), ())))


def products(t: int, d: int, f: int) -> dict:
  """name -> (fn(a, b), a's shape, b's shape): the feed-forward layer's products, forward and backward."""
  return {
    "forward x @ wi": (lambda a, b: dot(a, b, 1, 0), (t, d), (d, f)),
    "forward h @ wo": (lambda a, b: dot(a, b, 1, 0), (t, f), (f, d)),
    "input grad g @ wo^T": (lambda a, b: dot(a, b, 1, 1), (t, d), (f, d)),
    "kernel grad x^T dh (wi)": (lambda a, b: dot(a, b, 0, 0), (t, d), (t, f)),
    "kernel grad (g^T h)^T (wo)": (lambda a, b: dot(a, b, 0, 0).T, (t, d), (t, f)),
  }


def fastest(fn, *args) -> float:
  """Seconds of the fastest of --repeats calls of jit(fn)(*args), after one compiling call."""
  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  return perf.fastest_seconds(lambda: jax.block_until_ready(compiled(*args)), _REPEATS.value)


def main(argv):
  del argv
  t, d, f, n = _TOKENS.value, _D_MODEL.value, _D_FF.value, _LAYERS.value
  flop = 2 * t * d * f
  ceiling = perf.measured_matmul_peak()  # train_vs_peers.py's jax ceiling, measured the same way
  print(f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores; [{t} tokens, d {d}, ff {f}], "
        f"{flop / 1e9:.2f} GFLOP a product, {n} products in a step; float32 matmul ceiling "
        f"{ceiling / 1e9:.0f} GFLOP/s")
  print("| product | alone ms | alone GFLOP/s | in a step ms each | in a step GFLOP/s | in a step / alone "
        "| in a step / ceiling |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for seed, (name, (fn, a_shape, b_shape)) in enumerate(products(t, d, f).items()):
    key_a, key_b = jax.random.split(jax.random.key(seed))
    a = jax.random.normal(key_a, (n, *a_shape))  # [layers, ...]: distinct operands per layer
    b = jax.random.normal(key_b, (n, *b_shape))
    alone = fastest(fn, a[0], b[0])
    in_step = fastest(lambda a, b: [fn(a[layer], b[layer]) for layer in range(n)], a, b) / n
    print(f"| {name} | {alone * 1e3:.1f} | {flop / alone / 1e9:.0f} | {in_step * 1e3:.1f} | "
          f"{flop / in_step / 1e9:.0f} | {alone / in_step:.0%} | {flop / in_step / ceiling:.0%} |", flush=True)


if __name__ == "__main__":
  app.run(main)
