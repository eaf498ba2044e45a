"""tx_jax.xla_options: the CPU's full vector width for compiled steps, and its jit at and below top level."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tx_jax import xla_options

AVX512_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n"
AVX2_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.mark.parametrize("backend, cpuinfo, xla_flags, expected", [
  ("cpu", AVX512_CPU, "", {"xla_cpu_prefer_vector_width": 512}),
  ("cpu", AVX512_CPU, "--xla_force_host_platform_device_count=8", {"xla_cpu_prefer_vector_width": 512}),
  ("cpu", AVX2_CPU, "", {}),  # no wider vectors to ask for
  ("cpu", "", "", {}),  # no /proc/cpuinfo
  ("cpu", AVX512_CPU, "--xla_cpu_prefer_vector_width=256", {}),  # the user's own choice stands
  ("gpu", AVX512_CPU, "", {}),
  ("tpu", AVX512_CPU, "", {}),
])
def test_options_ask_for_512_bit_vectors_only_on_an_avx512_cpu_the_user_left_alone(backend, cpuinfo, xla_flags,
                                                                                  expected):
  assert xla_options.options_for(backend, cpuinfo, xla_flags) == expected


def test_avx512_is_read_from_the_flags_line_only():
  assert not xla_options.cpu_has_avx512("model name\t: avx512f-less CPU\nflags\t\t: avx2\n")
  assert not xla_options.cpu_has_avx512("flags\t\t: avx512fx\n")  # a whole word, not a prefix


def test_options_are_accepted_by_this_jax_and_change_no_value():
  """The options compile here (jax rejects an unknown one), and a reduction-heavy function gives the same values."""
  def norm_softmax(x):
    x = (x - x.mean(-1, keepdims=True)) * jax.lax.rsqrt(x.var(-1, keepdims=True) + 1e-6)
    return jax.nn.softmax(x, axis=-1), jnp.argmax(x, axis=-1)

  x = jax.random.normal(jax.random.key(0), (32, 1000))
  tuned = jax.jit(norm_softmax, compiler_options=xla_options.options_for("cpu", AVX512_CPU, "") or None)
  for got, want in zip(tuned(x), jax.jit(norm_softmax)(x)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)


def test_jit_runs_at_top_level_and_inside_other_traces():
  """jax refuses compile options on a nested jit; xla_options.jit then runs the plain one."""
  @xla_options.jit
  def f(x):
    return jnp.sum(jnp.tanh(x) ** 2)

  x = jnp.linspace(-2.0, 2.0, 64)
  want = float(jnp.sum(jnp.tanh(x) ** 2))
  np.testing.assert_allclose(float(f(x)), want, rtol=1e-6)
  np.testing.assert_allclose(float(jax.jit(lambda y: f(y) * 2)(x)), 2 * want, rtol=1e-6)  # nested
  np.testing.assert_allclose(np.asarray(jax.grad(f)(x)), np.asarray(2 * jnp.tanh(x) / jnp.cosh(x) ** 2), rtol=1e-5)
  np.testing.assert_allclose(float(jax.jit(lambda: f(x))()), want, rtol=1e-6)  # concrete x inside another trace
  assert jax.eval_shape(lambda: f(x)).shape == ()
  np.testing.assert_allclose(float(f.lower(x).compile()(x)), want, rtol=1e-6)  # ahead of time
  assert f.__wrapped__.__name__ == "f"


def test_jit_keeps_static_arguments_static():
  g = xla_options.jit(lambda x, n: x * n, static_argnames=("n",))
  assert float(g(jnp.float32(3.0), n=4)) == 12.0


def test_jit_hands_its_options_to_the_compiler(monkeypatch):
  """An option XLA rejects fails the top-level call, so the options reach the compiler; a nested call never sees them."""
  monkeypatch.setattr(xla_options, "compile_options", lambda: {"xla_cpu_no_such_option": 1})
  f = xla_options.jit(lambda x: x + 1)
  with pytest.raises(Exception, match="xla_cpu_no_such_option"):
    f(jnp.ones(3))
  np.testing.assert_array_equal(np.asarray(jax.jit(lambda y: f(y))(jnp.ones(3))), 2.0)
  np.testing.assert_array_equal(np.asarray(jax.jit(lambda: f(jnp.ones(3)))()), 2.0)
  with pytest.raises(Exception, match="xla_cpu_no_such_option"):
    f.lower(jnp.ones(3)).compile()


def test_the_log_line_names_the_options_or_xlas_defaults(monkeypatch):
  monkeypatch.setattr(xla_options, "compile_options", lambda: {"xla_cpu_prefer_vector_width": 512})
  assert xla_options.describe() == "{'xla_cpu_prefer_vector_width': 512}"
  assert xla_options.describe("pmap") == "XLA's defaults (jax.pmap takes no compile options)"
  monkeypatch.setattr(xla_options, "compile_options", lambda: {})
  assert xla_options.describe() == "XLA's defaults"
