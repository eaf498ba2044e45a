"""Python's garbage collector in a long run: what start-up leaves alive is frozen out of its full passes.

A full collection (CPython's generation 2) walks every container object the process holds. Once
jax, flax, the model and the traced and compiled steps are loaded that walk takes 60-140 ms on
this project's 2-core machines, and CPython starts one about every 75 steps of configs/default.py
(~1 % of its training time, each a step 40-80 % longer than its neighbours) and ~13 times while a
base model's train step traces (~1 s of its first step); experiments/README.md, sixteenth pass.
In a multi-host run a pause on one process stalls every other at the next collective.

`gc.freeze()` moves the objects alive at that moment into a permanent generation that the passes
skip. The collector stays on for what the run creates afterwards (batches, metrics, checkpoints'
Python side), whose passes are then short. `freeze()` collects first, so no garbage is frozen
with the live objects. `thawed_at_exit()` unfreezes when the run ends what tx_jax froze, so an
in-process caller (a test, a notebook) gets its collector back as it was. The standard library
has the switches; which moments to freeze at is this module's choice.
"""

import contextlib
import gc


def freeze() -> int:
  """Collects, then freezes every object alive now out of the collector's passes; the number frozen so far."""
  gc.collect()
  gc.freeze()
  return gc.get_freeze_count()


@contextlib.contextmanager
def thawed_at_exit():
  """Unfreezes at the block's end what `freeze()` froze within it (all stays frozen if the caller had frozen some)."""
  frozen_before = gc.get_freeze_count()
  try:
    yield
  finally:
    if frozen_before == 0 and gc.get_freeze_count():
      gc.unfreeze()  # moves the frozen objects into the oldest generation, collected as any other
