"""mixed_dot (bf16 operands, float32 accumulation, its own VJP) and Dense against float32 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tx_jax.models import matmul


@pytest.mark.parametrize("transpose_w", [False, True])
def test_mixed_dot_and_its_gradients_match_float32(transpose_w):
  x = jax.random.normal(jax.random.key(0), (4, 6, 32))
  w = jax.random.normal(jax.random.key(1), (32, 16))
  w_arg = w.T if transpose_w else w
  c = jax.random.normal(jax.random.key(2), (4, 6, 16))
  mixed = lambda x, w: jnp.sum(matmul.mixed_dot(x, w, jnp.bfloat16, transpose_w) * c)
  exact = lambda x, w: jnp.sum(jnp.einsum("bld,de->ble", x, w.T if transpose_w else w) * c)
  assert matmul.mixed_dot(x, w_arg, jnp.bfloat16, transpose_w).dtype == jnp.float32
  for got, want in zip(jax.grad(mixed, (0, 1))(x, w_arg), jax.grad(exact, (0, 1))(x, w_arg)):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=0.01 * float(jnp.abs(want).max()))


def test_dense_keeps_linear_parameters_and_float32_behaviour():
  dense = matmul.Dense(8, 4, dtype=jnp.float32, rngs=nnx.Rngs(0))
  linear = nnx.Linear(8, 4, dtype=jnp.float32, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(3), (2, 8))
  assert jax.tree.map(jnp.shape, nnx.state(dense, nnx.Param)) == jax.tree.map(jnp.shape, nnx.state(linear, nnx.Param))
  np.testing.assert_array_equal(dense(x), linear(x))
  dense.dtype = jnp.bfloat16
  y = dense(x)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), linear(x), atol=0.05)


@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize("n_in,n_out", [(24, 16), (96, 4), (4, 96)])  # the kernel gradient in either orientation
@pytest.mark.parametrize("lead", [(3, 5), (24,), (13,)])  # rows; tokens (token_layout), split by 8 or not
def test_float32_mixed_dot_gives_autodiff_values_and_gradients(transpose_w, n_in, n_out, lead):
  x = jax.random.normal(jax.random.key(4), (*lead, n_in))
  w = jax.random.normal(jax.random.key(5), (n_out, n_in) if transpose_w else (n_in, n_out))
  c = jax.random.normal(jax.random.key(6), (*lead, n_out))
  own = lambda x, w: jnp.sum(matmul.mixed_dot(x, w, jnp.float32, transpose_w) * c)
  plain = lambda x, w: jnp.sum((x @ (w.T if transpose_w else w)) * c)
  np.testing.assert_allclose(own(x, w), plain(x, w), rtol=1e-5)
  for got, want in zip(jax.grad(own, (0, 1))(x, w), jax.grad(plain, (0, 1))(x, w)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_kernel_gradient_copies_the_smaller_side():
  """x^T g when x is the narrower operand; (g^T x)^T, with its result transposed, when g and w are smaller."""
  lead = (0, 1)
  wide, narrow = jnp.ones((3, 5, 96)), jnp.ones((3, 5, 4))
  flipped = jax.make_jaxpr(lambda a, b: matmul._kernel_grad(a, b, lead, 96 * 4))(wide, narrow)
  direct = jax.make_jaxpr(lambda a, b: matmul._kernel_grad(a, b, lead, 96 * 4))(narrow, wide)
  assert "transpose" in str(flipped) and "transpose" not in str(direct)
  assert "optimization_barrier" in str(flipped)  # the transpose stays outside the product (see _kernel_grad)
  np.testing.assert_allclose(matmul._kernel_grad(wide, narrow * 2, lead, 96 * 4), jnp.einsum("bli,blo->io", wide, narrow * 2))


def test_kernel_gradient_over_one_token_axis_contracts_two():
  """[tokens, d] goes in as [tokens / 8, 8, d], whose product XLA:CPU runs on YNNPACK (see _kernel_grad)."""
  x, g = jax.random.normal(jax.random.key(7), (16, 24)), jax.random.normal(jax.random.key(8), (16, 6))
  dots = [e for e in jax.make_jaxpr(lambda a, b: matmul._kernel_grad(a, b, (0,), 24 * 6))(x, g).eqns
          if e.primitive.name == "dot_general"]
  assert [e.params["dimension_numbers"][0] for e in dots] == [((0, 1), (0, 1))]
  np.testing.assert_allclose(matmul._kernel_grad(x, g, (0,), 24 * 6), x.T @ g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_stacked_dense_equals_each_dense_and_their_gradients(dtype):
  denses = [matmul.Dense(12, 8, dtype=dtype, rngs=nnx.Rngs(i)) for i in range(3)]
  for i, d in enumerate(denses):  # non-zero biases, so that their stacking is checked too
    d.bias[...] = jax.random.normal(jax.random.key(10 + i), (8,))
  x = jax.random.normal(jax.random.key(7), (2, 5, 12))
  c = jax.random.normal(jax.random.key(8), (2, 5, 3, 8))
  stacked = matmul.stacked_dense(x, denses)
  assert stacked.shape == (2, 5, 3, 8) and stacked.dtype == dtype
  separate = jnp.stack([d(x) for d in denses], axis=-2)
  np.testing.assert_allclose(np.asarray(stacked, np.float32), np.asarray(separate, np.float32), rtol=1e-6, atol=1e-6)
  stored = matmul.StackedDense(denses)  # the stack stored once, for decoding: the same result
  np.testing.assert_array_equal(np.asarray(stored(x), np.float32), np.asarray(stacked, np.float32))
  assert stored(x).dtype == dtype
  params = nnx.state(nnx.List(denses), nnx.Param)
  graphdef = nnx.graphdef(nnx.List(denses))

  def loss(params, x, together):
    layers = nnx.merge(graphdef, params)
    y = matmul.stacked_dense(x, list(layers)) if together else jnp.stack([d(x) for d in layers], axis=-2)
    return jnp.sum(y.astype(jnp.float32) * c)

  got = jax.grad(loss, (0, 1))(params, x, True)
  want = jax.grad(loss, (0, 1))(params, x, False)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-5)
