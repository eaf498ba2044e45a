"""Matmuls that accumulate in float32 with their backward written out, and the Dense layers built on them.

Hand-written (jax.custom_vjp) for two reasons, both measured on XLA:CPU:
- bfloat16: XLA runs a bfloat16 x bfloat16 -> bfloat16 dot as a float32 one (at the float32 rate), and
  only a dot with preferred_element_type=float32 on bfloat16 operands uses the bf16 units (AVX-512 BF16 /
  AMX: 860-890 vs 410-460 GFLOP/s at [2048, 256-512] x [256-512, 1024-2048] on the benchmark machine).
  jax's transpose of such a dot multiplies the float32 cotangent by the bfloat16 operand, which XLA again
  runs in float32, so the backward (two thirds of a training step's matmuls) would not gain.
- float32 too: jax's transpose computes every kernel's gradient as g^T x ([n_out, n_in]) and then
  transposes it, and inside a training step XLA materialises g^T (and the result's transpose) around the
  product. Written as x^T g, contracting the tokens of both, it comes out in the kernel's layout: the
  float32 training step is 3-6 % faster (small 702 -> 657 ms, base 4.00 -> 3.88 s, same losses).
  `_kernel_grad` then picks, per kernel, the orientation whose transposed copies are smaller (the
  feed-forward's output kernel and the tied output layer flip): the base step a further 2 % (3.84 ->
  3.80 s median, -80 ± 24 ms paired over 16 alternating steps, same losses), and 1-2 % more with the
  flipped products kept on YNNPACK (see `_kernel_grad`).
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
  """x [..., n_in] @ w [n_in, *out] (w [n_out, n_in] with transpose_w) -> [..., *out] float32, operands in `dtype`.

  `dtype` bfloat16 (or float16) runs the products on the bf16 units; float32 gives plain float32 dots.
  """
  return _dot(x.astype(dtype), w.astype(dtype), (x.ndim - 1,), (1 if transpose_w else 0,))


def _forward(x, w, dtype, transpose_w):
  """The product and its residuals: both operands, already in `dtype` (half the bytes of float32 ones)."""
  xc, wc = x.astype(dtype), w.astype(dtype)
  dtypes = (jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))  # the primals' dtypes (residuals must be arrays)
  return _dot(xc, wc, (x.ndim - 1,), (1 if transpose_w else 0,)), (xc, wc, *dtypes)


def _backward(dtype, transpose_w, residuals, g):
  """dx = g w^T and dw = x^T g, each a `dtype` x `dtype` matmul accumulated in float32."""
  xc, wc, x_like, w_like = residuals
  gc = g.astype(dtype)  # [..., *out]
  w_out = (0,) if transpose_w else tuple(range(1, wc.ndim))  # w's output axes
  lead = tuple(range(xc.ndim - 1))
  dx = _dot(gc, wc, tuple(range(len(lead), gc.ndim)), w_out)  # [..., n_in]
  dw = _kernel_grad(gc, xc, lead, wc.size) if transpose_w else _kernel_grad(xc, gc, lead, wc.size)
  return dx.astype(x_like.dtype), dw.astype(w_like.dtype)


def _kernel_grad(first, second, lead, w_size):
  """first^T second over the token axes `lead` -> [first's free axis, *second's free axes] (w's shape).

  XLA:CPU feeds a product that contracts its left operand's leading axes from a transposed copy of
  that operand. Written first^T second, it copies `first`; written (second^T first)^T, it copies
  `second` and the w-sized result. This takes whichever copies fewer elements: the feed-forward's
  output kernel, first = ReLU output [tokens, 4d], copies 2 d-wide arrays instead of one 4d-wide.
  The barrier keeps that transpose after the product: left free, XLA folds it into the dot, which then
  contracts its left operand's leading axis and runs on Eigen instead of YNNPACK (a trace hides its time
  inside the YNNPACK product beside it). Behind the barrier the float32 step is faster: base -31 ± 21 ms,
  small -14 ± 7 ms, paired over 24 alternating steps, same losses.
  """
  if lead == (0,) and first.shape[0] % 8 == 0:
    # One token axis (tx_jax.models.token_layout's [tokens, d]): XLA contracts it inside an Eigen dot
    # with no transposed copy; as [tokens / 8, 8, d] it makes the copy and runs YNNPACK, as it does for
    # rows [batch, len, d]. The base step without padding: 1,454-1,485 ms against 1,501-1,541.
    first, second = (a.reshape(a.shape[0] // 8, 8, *a.shape[1:]) for a in (first, second))
    lead = (0, 1)
  if second.size + w_size < first.size:
    return jnp.moveaxis(jax.lax.optimization_barrier(_dot(second, first, lead, lead)), -1, 0)
  return _dot(first, second, lead, lead)


mixed_dot.defvjp(_forward, _backward)


def _biased(y, bias, dtype):
  """mixed_dot's float32 result plus a float32 bias (its gradient then a float32 reduction), cast to `dtype`."""
  return (y if bias is None else y + bias.astype(jnp.float32)).astype(dtype)


class Dense(nnx.Linear):
  """nnx.Linear (same parameters, same result) computed as mixed_dot in its dtype + float32 bias."""

  def __call__(self, x):
    """x [..., n_in] -> [..., n_out] in self.dtype."""
    if self.dtype is None:  # nnx.Linear's promotion to the inputs' dtype
      return super().__call__(x)
    bias = self.bias[...] if self.bias is not None else None
    return _biased(mixed_dot(x, self.kernel[...], self.dtype), bias, self.dtype)


def _stacks(denses):
  """The kernels [n_in, len(denses), n_out] and biases [len(denses), n_out] (or None) of Dense layers of one shape.

  The kernels go on a new middle axis: in memory the [n_in, len * n_out] concatenation, so a product
  reads them as one matrix, and a sharded n_out stays sharded.
  """
  kernel = jnp.stack([d.kernel[...] for d in denses], axis=1)
  bias = jnp.stack([d.bias[...] for d in denses]) if denses[0].bias is not None else None
  return kernel, bias


def _stacked_product(x, kernel, bias, dtype):
  """x [..., n_in] @ kernel [n_in, k, n_out] (+ bias [k, n_out]) -> [..., k, n_out] in `dtype` (None: promoted)."""
  dtype = dtype or jnp.result_type(x, kernel)
  return _biased(mixed_dot(x, kernel, dtype), bias, dtype)


def stacked_dense(x, denses):
  """x [..., n_in] through several Dense layers of one shape as one matmul -> [..., len(denses), n_out].

  One product of all the outputs runs faster on XLA:CPU than one per layer: decoding's
  [32, 512] x [512, 512] query, key and value projections take 0.70 ms as three and 0.33 ms as one.
  The stacking itself runs in every call (hoisted out of a decoding loop's body by XLA);
  `StackedDense` stores it once. Same result as applying each Dense.
  """
  return _stacked_product(x, *_stacks(denses), denses[0].dtype)


class StackedDense(nnx.Module):
  """`stacked_dense` over a stored copy of the layers' stacked kernels and biases, for decoding.

  A decoding call then reads the stack instead of writing it first (see `decode.with_decoding_weights`).
  The copy does not follow later updates of the layers.
  """

  def __init__(self, denses):
    kernel, bias = _stacks(denses)
    self.kernel = nnx.Param(kernel)  # [n_in, len(denses), n_out]
    self.bias = nnx.Param(bias) if bias is not None else None  # [len(denses), n_out]
    self.dtype = denses[0].dtype

  def __call__(self, x):
    """x [..., n_in] -> [..., len(denses), n_out], as stacked_dense(x, denses)."""
    return _stacked_product(x, self.kernel[...], self.bias[...] if self.bias is not None else None, self.dtype)
