"""The XLA compile options tx_jax's compiled steps use: on a CPU with AVX-512, vectors of its full width.

XLA:CPU has LLVM emit its own loops (LayerNorm, softmax, argmax, the optimizer update: everything
that is not a matmul) for 256-bit vectors even where the CPU has 512-bit ones. Asking for 512
(`xla_cpu_prefer_vector_width`) made a base-shape greedy translation batch 1.7-2.8 % faster and the
base training step ~1 % (experiments/README.md, fifteenth pass), with the same tokens. XLA offers
this only as a compile option or an XLA_FLAGS flag; the option is set per compiled step here so it
reaches library calls too, not only the entry points (the `parallelism="pmap"` steps keep XLA's
default: jax.pmap takes no compile options). An XLA_FLAGS that names the flag is the user's choice and
is left to decide.
"""

import functools
import os

import jax

VECTOR_WIDTH = "xla_cpu_prefer_vector_width"


def cpu_has_avx512(cpuinfo: str) -> bool:
  """Whether /proc/cpuinfo's text lists the AVX-512 foundation instructions (`avx512f`)."""
  return any(line.startswith("flags") and "avx512f" in line.split() for line in cpuinfo.splitlines())


def options_for(backend: str, cpuinfo: str, xla_flags: str) -> dict:
  """The compile options for `backend` on a CPU described by `cpuinfo`, unless XLA_FLAGS sets them already."""
  if backend != "cpu" or VECTOR_WIDTH in xla_flags or not cpu_has_avx512(cpuinfo):
    return {}
  return {VECTOR_WIDTH: 512}


@functools.cache
def compile_options() -> dict:
  """This process's compile options for tx_jax's steps (decided once, after jax has chosen its backend)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpuinfo = f.read()
  except OSError:  # not Linux: XLA's own default
    cpuinfo = ""
  return options_for(jax.default_backend(), cpuinfo, os.environ.get("XLA_FLAGS", ""))


def describe(parallelism: str = "jit") -> str:
  """The compile options a run's steps get, for its log."""
  if parallelism == "pmap":
    return "XLA's defaults (jax.pmap takes no compile options)"
  options = compile_options()
  return str(options) if options else "XLA's defaults"


def jit(fun, **jit_kwargs):
  """jax.jit(fun, **jit_kwargs) compiled with `compile_options()`, decided at the first call.

  jax accepts compile options only on a top-level jit, so a call from inside another trace (its
  arguments tracers, or concrete arrays closed over by the caller's trace) runs the plain jit and
  takes the caller's options. `.lower(...)` lowers the tuned jit, for ahead-of-time compiles.
  """
  plain = jax.jit(fun, **jit_kwargs)
  tuned = functools.cache(lambda: jax.jit(fun, compiler_options=compile_options() or None, **jit_kwargs))

  @functools.wraps(fun)
  def call(*args, **kwargs):
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
      return plain(*args, **kwargs)
    try:
      return tuned()(*args, **kwargs)
    except ValueError as e:  # inside another trace with concrete arguments: jax refuses nested options
      if "compiler_options" not in str(e):
        raise
      return plain(*args, **kwargs)

  call.lower = lambda *args, **kwargs: tuned().lower(*args, **kwargs)
  return call
