"""Dropout from 16-bit uniforms: its rate, its scaling, its independence, and the same masks on any mesh."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tx_jax.models import dropout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
@pytest.mark.parametrize("shape", [(64, 128, 256), (3, 50, 7)])
def test_keep_mask_drops_at_the_rate(impl, shape):
  keep = np.asarray(dropout.keep_mask(jax.random.key(0, impl=impl), 0.1, shape))
  assert keep.shape == shape and keep.dtype == bool
  n = keep.size
  assert abs((1 - keep.mean()) - 0.1) < 5 * np.sqrt(0.1 * 0.9 / n) + 2 ** -17
  # The halves of one word and neighbouring elements are not correlated.
  flat = keep.reshape(-1, shape[-1]).astype(np.float64)
  if shape[-1] >= 64:
    for a, b in ((0, 1), (0, shape[-1] // 4), (0, shape[-1] // 2)):
      assert abs(np.corrcoef(flat[:, a], flat[:, b])[0, 1]) < 0.02
  other = np.asarray(dropout.keep_mask(jax.random.key(1, impl=impl), 0.1, shape))
  assert (other != keep).mean() > 0.1


def test_dropout_scales_the_kept_and_keeps_the_dtype():
  x = jnp.ones((8, 1000), jnp.bfloat16)
  y = dropout.dropout(x, 0.25, jax.random.key(3))
  assert y.dtype == jnp.bfloat16
  values = set(np.unique(np.asarray(y, np.float32)).tolist())
  assert values == {0.0, float(jnp.asarray(1 / 0.75, jnp.bfloat16))}
  assert dropout.dropout(x, 0.0, jax.random.key(3)) is x
  assert not np.asarray(dropout.dropout(x, 1.0, jax.random.key(3))).any()


def test_gradient_is_masked_like_the_output():
  x = jnp.arange(1.0, 513.0).reshape(2, 256)
  key = jax.random.key(7)
  grad = jax.grad(lambda x: dropout.dropout(x, 0.5, key).sum())(x)
  np.testing.assert_array_equal(np.asarray(grad) != 0, np.asarray(dropout.dropout(x, 0.5, key)) != 0)


_MESH_SCRIPT = r"""
import json, sys
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
sys.path.insert(0, {repo!r})
from tx_jax.models import dropout
key = jax.random.key(5)
masks = {{}}
for name, devices, spec in (("one", jax.devices()[:1], P()), ("batch8", jax.devices(), P("d")),
                            ("cols8", jax.devices(), P(None, None, "d"))):
  mesh = jax.sharding.Mesh(np.array(devices), ("d",))
  x = jax.device_put(np.ones((16, 8, 64), np.float32), NamedSharding(mesh, spec))
  y = jax.jit(lambda x: dropout.dropout(x, 0.1, key), out_shardings=NamedSharding(mesh, spec))(x)
  masks[name] = np.asarray(y).ravel().tolist()
print(json.dumps(masks))
"""


def test_threefry_masks_are_the_same_on_any_mesh():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  out = subprocess.run([sys.executable, "-c", _MESH_SCRIPT.format(repo=REPO)], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  masks = json.loads(out.stdout.strip().splitlines()[-1])
  assert masks["one"] == masks["batch8"] == masks["cols8"]
  assert 0 < masks["one"].count(0.0) < len(masks["one"])


def test_written_out_threefry_is_jax_threefry_bit_for_bit():
  from jax.extend.random import threefry2x32_p  # noqa: PLC0415
  k1, k2 = jax.random.key_data(jax.random.key(123))
  x1, x2 = (jax.random.bits(jax.random.key(s), (4096,), jnp.uint32) for s in (1, 2))
  for want, got in zip(threefry2x32_p.bind(k1, k2, x1, x2), jax.jit(dropout._threefry2x32)(k1, k2, x1, x2)):
    np.testing.assert_array_equal(got, want)
