"""Huge-page malloc for the entry points, so that XLA:CPU's buffers stop page-faulting every step.

XLA:CPU allocates an executable's buffers with malloc every time it runs it. glibc serves a request
above its mmap threshold (32 MB at most) with a fresh mapping that it unmaps again on free, so each
training step touches its large buffers (logits, their gradient, activations) as new pages: on
configs/default.py's shape ~165,000 minor page faults per step, ~680 MB faulted in and zeroed 4 KB
at a time. glibc's `glibc.malloc.hugetlb=1` tunable (glibc >= 2.35) makes malloc ask for
transparent huge pages on its mappings, which the kernel then faults in 2 MB at a time: ~1,000
faults per step, a step ~25 % shorter, the same peak memory (experiments/README.md, "Host memory").

glibc reads GLIBC_TUNABLES once, when a process starts, so an entry point calls
`restart_with_huge_pages()` before it imports jax and the process re-executes itself once with the
tunable added. Setting glibc.malloc.hugetlb yourself (e.g. GLIBC_TUNABLES=glibc.malloc.hugetlb=0)
opts out. No library does this: the PJRT CPU client has no allocator option, and glibc offers the
switch only as a start-up tunable.
"""

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def huge_page_malloc_available() -> bool:
  """Whether this is Linux with glibc >= 2.35 (which has the tunable) and transparent huge pages not "never"."""
  libc, version = platform.libc_ver()
  if sys.platform != "linux" or libc != "glibc":
    return False
  try:
    if tuple(int(part) for part in version.split(".")[:2]) < (2, 35):
      return False
    with open(_THP_SETTING, encoding="utf-8") as f:
      return "[never]" not in f.read()
  except (OSError, ValueError):
    return False


def _split_tunables(environ) -> tuple[str | None, list]:
  """(the value GLIBC_TUNABLES gives glibc.malloc.hugetlb or None, the other name=value tunables in order)."""
  value, others = None, []
  for tunable in environ.get("GLIBC_TUNABLES", "").split(":"):
    if tunable.startswith(TUNABLE + "="):
      value = tunable[len(TUNABLE) + 1:]
    elif tunable:
      others.append(tunable)
  return value, others


def with_huge_pages(environ) -> dict | None:
  """`environ` with glibc.malloc.hugetlb=1 added to GLIBC_TUNABLES; None if it names the tunable already.

  Other tunables the user set are kept, and a value of the user's own (0 to opt out) is never replaced.
  """
  value, _ = _split_tunables(environ)
  if value is not None:
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  return dict(environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, TUNABLE + "=1"])))


def without_huge_pages(environ) -> dict:
  """`environ` with glibc.malloc.hugetlb taken out of GLIBC_TUNABLES (glibc's default malloc); other tunables kept."""
  _, kept = _split_tunables(environ)
  environ = {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
  return dict(environ, GLIBC_TUNABLES=":".join(kept)) if kept else environ


def _huge_page_environment(environ) -> dict | None:
  """`environ` turned to huge-page malloc; None where that is unavailable or the tunable is named already."""
  return with_huge_pages(environ) if huge_page_malloc_available() else None


def environment_for_children(environ=None) -> dict:
  """The environment a child process should get to run with huge-page malloc (unchanged where unavailable)."""
  environ = dict(os.environ if environ is None else environ)
  return _huge_page_environment(environ) or environ


def restart_with_huge_pages() -> None:
  """Re-executes this process (same interpreter, same arguments) with huge-page malloc, once; else returns.

  Call it first thing in an entry point's `__main__`, before jax is imported: re-executing costs
  only an interpreter start. It returns at once where the tunable is unavailable, already set, or
  the re-execution fails.
  """
  environ = _huge_page_environment(os.environ)
  if environ is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, environ)
  except OSError:
    return


def describe() -> str:
  """How this process's malloc is set up, for the run's log."""
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  value, _ = _split_tunables(os.environ)
  if value == "1":
    return f"glibc with transparent huge pages (GLIBC_TUNABLES={tunables})"
  if value is not None:
    return f"glibc, huge pages as GLIBC_TUNABLES={tunables} sets them"
  if huge_page_malloc_available():
    return "glibc's default: this process was not started by restart_with_huge_pages (see tx_jax/host_memory.py)"
  return "the system's default (no huge-page malloc here: see tx_jax/host_memory.py)"
