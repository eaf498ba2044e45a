"""Position information: sinusoidal and learned embeddings, rotary (RoPE) rotations."""

import jax.numpy as jnp
import numpy as np


def sinusoidal(positions, dim: int, max_timescale: float = 10000.0, timescales: str = "tensor2tensor"):
  """The paper's sin/cos embedding of integer `positions` [batch, len] -> [batch, len, dim].

  Sines fill the first half of the features, cosines the second. `timescales`: "tensor2tensor"
  spreads the dim/2 frequencies from 1 to 1/max_timescale inclusive; "marian" uses the paper's
  1/max_timescale ** (2i/dim), as Hugging Face's Marian models do.
  """
  half = dim // 2
  steps = half if timescales == "marian" else max(half - 1, 1)  # tensor2tensor: the last one is max_timescale
  inv_freq = np.exp(-np.log(max_timescale) * np.arange(half) / steps)
  angles = positions[..., None].astype(jnp.float32) * inv_freq
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def apply_rope(x, positions, theta: float = 10000.0):
  """Rotates pairs of features of x [batch, len, heads, head_dim] by position-dependent angles."""
  head_dim = x.shape[-1]
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2) / head_dim))
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [batch, len, head_dim/2]
  sin, cos = jnp.sin(angles)[:, :, None], jnp.cos(angles)[:, :, None]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)
