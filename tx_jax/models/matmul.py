"""Matmuls of low-precision activations that accumulate in float32, forward and backward, and Dense on them.

Hand-written because XLA:CPU runs a bfloat16 x bfloat16 -> bfloat16 dot as a float32 one (at the float32
rate), and only a dot with preferred_element_type=float32 on bfloat16 operands uses the bf16 units
(AVX-512 BF16 / AMX: 860-890 vs 410-460 GFLOP/s at [2048, 256-512] x [256-512, 1024-2048] on the
benchmark machine). jax's transpose of such a dot multiplies the float32 cotangent by the bfloat16
operand, which XLA again runs in float32, so the backward (two thirds of a training step's matmuls)
would not gain: `mixed_dot` has its own VJP whose two matmuls take bfloat16 operands too.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx


def _dot(a, b, a_axes, b_axes):
  """dot_general of `a` and `b` contracting a_axes with b_axes, accumulated and returned in float32."""
  return jax.lax.dot_general(a, b, ((a_axes, b_axes), ((), ())), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def mixed_dot(x, w, dtype, transpose_w: bool = False):
  """x [..., n_in] @ w [n_in, n_out] (w [n_out, n_in] with transpose_w), operands in `dtype`, float32 result."""
  return _dot(x.astype(dtype), w.astype(dtype), (x.ndim - 1,), (1 if transpose_w else 0,))


def _forward(x, w, dtype, transpose_w):
  """The product and its residuals: both operands, already in `dtype` (half the bytes of float32 ones)."""
  xc, wc = x.astype(dtype), w.astype(dtype)
  dtypes = (jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))  # the primals' dtypes (residuals must be arrays)
  return _dot(xc, wc, (x.ndim - 1,), (1 if transpose_w else 0,)), (xc, wc, *dtypes)


def _backward(dtype, transpose_w, residuals, g):
  """dx = g w^T and dw = x^T g, each a `dtype` x `dtype` matmul accumulated in float32."""
  xc, wc, x_like, w_like = residuals
  gc = g.astype(dtype)  # [..., n_out]
  w_out = 0 if transpose_w else 1  # w's n_out axis
  dx = _dot(gc, wc, (g.ndim - 1,), (w_out,))  # [..., n_in]
  lead = tuple(range(xc.ndim - 1))
  dw = _dot(gc, xc, lead, lead) if transpose_w else _dot(xc, gc, lead, lead)  # w's shape
  return dx.astype(x_like.dtype), dw.astype(w_like.dtype)


mixed_dot.defvjp(_forward, _backward)


def is_low_precision(dtype) -> bool:
  """Whether activations of `dtype` take the mixed path (bfloat16, float16) rather than plain float32 dots."""
  return jnp.dtype(dtype).itemsize < 4


class Dense(nnx.Linear):
  """nnx.Linear (same parameters) whose low-precision form is mixed_dot + float32 bias, then cast to its dtype."""

  def __call__(self, x):
    """x [..., n_in] -> [..., n_out] in self.dtype."""
    if self.dtype is None or not is_low_precision(self.dtype):
      return super().__call__(x)
    y = mixed_dot(x, self.kernel[...], self.dtype)  # float32
    if self.bias is not None:
      y = y + self.bias[...].astype(jnp.float32)  # the bias gradient is then a float32 reduction
    return y.astype(self.dtype)
