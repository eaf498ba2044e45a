"""A malloc that keeps freed memory for the next step, for the entry points on CPU.

XLA:CPU allocates an executable's buffers with malloc every time it runs it. glibc serves a request
above its mmap threshold (32 MB at most), and any large request from a thread's own arena, with a
fresh mapping that it unmaps again on free, so each training step faults its large buffers (logits,
their gradient, activations) in anew and the kernel zeroes them: on configs/default.py ~85,000
minor page faults (~340 MB) per step. Three glibc tunables stop that: every thread shares the main
arena (`glibc.malloc.arena_max=1`), which never maps (`glibc.malloc.mmap_max=0`) and never hands
memory back (`glibc.malloc.trim_threshold`, 1 TiB), so a step's buffers reuse the pages of the step
before: no faults after the first step, no more peak memory (experiments/README.md, "Host memory
and imports", seventh pass).

Huge pages (`glibc.malloc.hugetlb=1`, this module's earlier choice) cut the faults 512-fold but not
out, and zeroing fresh 2 MB pages made every run's first step 1.0-1.4 s longer on this project's
machines: a start-up cost this malloc does not have.

glibc reads GLIBC_TUNABLES once, when a process starts, so an entry point calls
`restart_with_tuned_malloc()` before it imports jax and the process re-executes itself once with the
tunables added. A GLIBC_TUNABLES that names any `glibc.malloc.*` tunable is the user's own choice and
is left as it is (e.g. GLIBC_TUNABLES=glibc.malloc.arena_max=8 opts out). Where jax will find a GPU
or TPU nothing changes: the step's buffers live on the device there, and one arena would only make
the input pipeline's threads wait for each other's mallocs. No library does this: the PJRT CPU
client has no allocator option, and glibc offers these switches only as start-up tunables
(`mallopt` after XLA's threads exist leaves their arenas mapping: measured in the third pass).
"""

import importlib.util
import os
import platform
import sys

_PREFIX = "glibc.malloc."
TUNABLES = ("glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0", f"glibc.malloc.trim_threshold={1 << 40}")


def tuned_malloc_available(environ=None) -> bool:
  """Whether this is Linux with glibc (whose tunables these are) and jax will run on the CPU."""
  environ = os.environ if environ is None else environ
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return False
  platforms = environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  # jax's GPU plugins install modules under the jax_plugins namespace; its TPU runtime is libtpu.
  return not any(importlib.util.find_spec(name) for name in ("jax_plugins", "libtpu"))


def _user_tunables(environ) -> list:
  """The name=value tunables of GLIBC_TUNABLES, in order."""
  return [tunable for tunable in environ.get("GLIBC_TUNABLES", "").split(":") if tunable]


def _sets_malloc(tunables) -> bool:
  """Whether `tunables` name a glibc.malloc tunable: the user's own malloc choice, or this module's after restarting."""
  return any(tunable.startswith(_PREFIX) for tunable in tunables)


def with_tuned_malloc(environ) -> dict | None:
  """`environ` with TUNABLES added to GLIBC_TUNABLES; None if it names a glibc.malloc tunable already.

  Tunables of other glibc parts the user set are kept, and a malloc setting of the user's own is never replaced.
  """
  tunables = _user_tunables(environ)
  if _sets_malloc(tunables):
    return None
  return dict(environ, GLIBC_TUNABLES=":".join([*tunables, *TUNABLES]))


def without_tuned_malloc(environ) -> dict:
  """`environ` with TUNABLES taken out of GLIBC_TUNABLES (glibc's default malloc); other tunables kept."""
  kept = [tunable for tunable in _user_tunables(environ) if tunable not in TUNABLES]
  environ = {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
  return dict(environ, GLIBC_TUNABLES=":".join(kept)) if kept else environ


def _tuned_environment(environ) -> dict | None:
  """`environ` turned to the tuned malloc; None where that is unavailable or the user set malloc tunables."""
  return with_tuned_malloc(environ) if tuned_malloc_available(environ) else None


def environment_for_children(environ=None) -> dict:
  """The environment a child process should get to run with the tuned malloc (unchanged where unavailable)."""
  environ = dict(os.environ if environ is None else environ)
  return _tuned_environment(environ) or environ


def restart_with_tuned_malloc() -> None:
  """Re-executes this process (same interpreter, same arguments) with the tuned malloc, once; else returns.

  Call it first thing in an entry point's `__main__`, before jax is imported: re-executing costs
  only an interpreter start. It returns at once where the tunables are unavailable, already set, or
  the re-execution fails.
  """
  environ = _tuned_environment(os.environ)
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, environ)
  except OSError:
    return


def requested(argv, default: bool, flag: str = "tuned_malloc") -> bool:
  """Whether command-line `argv` asks for the tuned malloc: absl's spellings of a bool `flag`, read before absl parses.

  --flag, --flag=true|1|yes, --noflag, --flag=false|0|no (one or two dashes; the last one wins; nothing
  after a bare --); `default` when absent. A script that restarts itself must decide before jax starts.
  """
  values = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
  wanted = default
  for arg in argv[1:]:
    if arg == "--":
      break
    if not arg.startswith("-"):
      continue
    name, has_value, value = arg.lstrip("-").partition("=")
    if name == flag:
      wanted = values.get(value.lower(), wanted) if has_value else True
    elif name == f"no{flag}" and not has_value:
      wanted = False
  return wanted


def describe() -> str:
  """How this process's malloc is set up, for the run's log."""
  tunables = _user_tunables(os.environ)
  if all(tunable in tunables for tunable in TUNABLES):
    return f"glibc, one arena that keeps freed memory (GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']})"
  if _sets_malloc(tunables):
    return f"glibc as GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']} sets it"
  if tuned_malloc_available():
    return "glibc's default: this process was not started by restart_with_tuned_malloc (see tx_jax/host_memory.py)"
  return "the system's default (no tuned malloc here: see tx_jax/host_memory.py)"
