"""Python's garbage collector in a long run: what start-up leaves alive is frozen out of its full passes.

A full collection (CPython's generation 2) walks every container object the process holds. Once
jax, flax, the model and the traced and compiled steps are loaded that walk takes 60-210 ms on
this project's 2-core machines, and CPython starts one about every 80 steps of configs/default.py
(~1 % of its training time, each a step 40-110 % longer than its neighbours) and ~13 times while a
base model's train step traces (~1 s of its first step); experiments/README.md, sixteenth pass.
In a multi-host run a pause on one process stalls every other at the next collective.

`gc.freeze()` moves the objects alive at that moment into a permanent generation that the passes
skip. The collector stays on for what the run creates afterwards (batches, metrics, checkpoints'
Python side), whose passes are then short. `freeze()` collects first, so no garbage is frozen
with the live objects; the entry points choose the moments (tx_jax.train: before it builds, after
its first step and after each evaluation). `thawed_at_exit()` unfreezes everything when the run
ends, so an in-process caller (a test, a notebook) gets its collector back as it was, unless that
caller had frozen objects of its own: gc cannot unfreeze a part, so then all stays frozen. The
standard library has the switches; no library chooses the moments.
"""

import contextlib
import gc

# What the interpreter froze itself before any caller could (CPython 3.12 starts with ~375 built-in
# type tuples frozen; 3.11 and 3.13 with none): a count at or below it means no caller has frozen anything.
INTERPRETER_FROZEN = gc.get_freeze_count()


def freeze() -> int:
  """Collects, then freezes every object alive now out of the collector's passes; the number frozen so far."""
  gc.collect()
  gc.freeze()
  return gc.get_freeze_count()


@contextlib.contextmanager
def thawed_at_exit():
  """Unfreezes everything at the block's end if the block froze objects and its caller had frozen none."""
  frozen_before = gc.get_freeze_count()
  try:
    yield
  finally:
    if frozen_before <= INTERPRETER_FROZEN < gc.get_freeze_count():
      gc.unfreeze()  # the frozen objects join the oldest generation, collected as any other
