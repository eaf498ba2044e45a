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
