"""Dropout whose keep-decisions come from 16-bit uniforms: two to four per hash instead of one.

Hand-written because jax.random.bernoulli (and nnx.Dropout on it) spends a 32-bit float uniform, and
with threefry (partitionable) a whole 2x32-bit hash, on every element. Here each 16-bit half of a
random word decides one element, keeping it when the half is >= round(rate * 2^16) (the drop
probability is off by at most 2^-17, e.g. 6554 / 65536 = 0.100006 for rate 0.1). With threefry the
hash's two output words are both used (four decisions per hash) and the hash is written out so that
XLA fuses it with the mask's use (the small benchmark step's masks: 20 vs 118 ms with bernoulli on
the 2-core CPU of experiments/README.md); with other key kinds (rbg) jax.random.bits' 32-bit words give two.
The counters are the global indices of the word array, so with threefry every element's bit is the
same on any mesh (iota and the hash are elementwise, and XLA partitions them by global index).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

_HALVES_PER_WORD = 2  # 16-bit uniforms per uint32 word


def _flat_iota(shape) -> jax.Array:
  """uint32 [*shape]: each element's row-major index (the array must have fewer than 2^32 elements)."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return index


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k1, k2, x1, x2):
  """Threefry-2x32 (20 rounds) of the counters (x1, x2) under key (k1, k2): jax's hash, bit for bit.

  Written out because jax lowers threefry2x32_p on CPU as a 5-iteration XLA while loop, each
  iteration a pass over the whole array in memory; unrolled, XLA fuses the hash with the mask's
  compare and select into one loop over the elements.
  """
  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  x = [x1 + ks[0], x2 + ks[1]]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x[0] = x[0] + x[1]
      x[1] = ((x[1] << jnp.uint32(r)) | (x[1] >> jnp.uint32(32 - r))) ^ x[0]
    x = [x[0] + ks[(i + 1) % 3], x[1] + ks[(i + 2) % 3] + jnp.uint32(i + 1)]
  return x


def _is_threefry(key) -> bool:
  """Whether `key` is a threefry2x32 key (else rbg or another jax.random implementation)."""
  return str(jax.random.key_impl(key)) == "threefry2x32"


def _random_words(key, shape) -> list:
  """Independent uint32 word arrays [*shape] from `key`: threefry's two hash outputs, or one jax.random.bits."""
  if _is_threefry(key):
    if math.prod(shape) >= 2 ** 32:
      raise ValueError(f"dropout over {shape}: at most 2^32 words per mask")
    k1, k2 = jax.random.key_data(key)
    counts = _flat_iota(shape)
    return _threefry2x32(k1, k2, jnp.zeros_like(counts), counts)
  return [jax.random.bits(key, shape, jnp.uint32)]


def keep_mask(key, rate: float, shape) -> jax.Array:
  """bool [*shape]: True with probability 1 - rate (to within 2^-17), independently per element.

  The last axis is drawn in chunks: element j of a row takes 16 bits of word (j mod m) of the
  row's m = ceil(n / decisions per word) words.
  """
  *lead, n = shape
  per_word = _HALVES_PER_WORD * (2 if _is_threefry(key) else 1)
  m = -(-n // per_word)
  words = _random_words(key, (*lead, m))  # each [*lead, m]
  threshold = jnp.uint32(min(round(rate * 65536), 65536))
  halves = [h for w in words for h in (w & jnp.uint32(0xFFFF), w >> jnp.uint32(16))]
  keep = jnp.concatenate([h >= threshold for h in halves], axis=-1)  # [*lead, per_word * m]
  return keep[..., :n]


def dropout(x, rate: float, key) -> jax.Array:
  """x with each element zeroed with probability `rate` and the rest scaled by 1 / (1 - rate), in x's dtype."""
  if rate <= 0.0:
    return x
  if rate >= 1.0:
    return jnp.zeros_like(x)
  keep = keep_mask(key, rate, x.shape)
  return jnp.where(keep, x * jnp.asarray(1.0 / (1.0 - rate), x.dtype), jnp.zeros((), x.dtype))


class Dropout(nnx.Module):
  """nnx.Dropout's interface (rate; deterministic and rngs at call time) on `dropout` above."""

  def __init__(self, rate: float):
    self.rate = rate

  def __call__(self, x, *, deterministic: bool = True, rngs: nnx.Rngs | None = None):
    """x [...] -> x with dropout applied unless `deterministic` (or rate 0); keys from rngs.dropout()."""
    if deterministic or self.rate == 0.0:
      return x
    if rngs is None:
      raise ValueError("dropout needs rngs (with a 'dropout' stream) when deterministic is False")
    return dropout(x, self.rate, rngs.dropout())
