"""The collector's freezing: garbage collected first, live objects out of the passes, unfrozen after a run."""

import gc
import weakref

from tx_jax import python_gc, train


class Node:
  """A container the collector tracks."""


def _tracked(obj) -> bool:
  """Whether a collector pass would walk `obj` (gc.get_objects() skips the frozen, permanent generation)."""
  return any(o is obj for o in gc.get_objects())


def test_freeze_collects_cycles_first_and_freezes_what_is_alive():
  garbage = Node()
  garbage.self = garbage  # a cycle: only the collector frees it
  dead = weakref.ref(garbage)
  del garbage
  alive = Node()
  with python_gc.thawed_at_exit():
    count = python_gc.freeze()
    assert dead() is None  # collected, not frozen with the live objects
    assert count == gc.get_freeze_count() > 0
    assert not _tracked(alive)
    later = Node()
    assert _tracked(later)  # what is made after a freeze is collected as usual
  assert gc.get_freeze_count() == 0 and _tracked(alive)


def test_a_callers_own_freeze_is_left_in_place():
  gc.freeze()
  try:
    with python_gc.thawed_at_exit():
      python_gc.freeze()
    assert gc.get_freeze_count() > 0
  finally:
    gc.unfreeze()


def test_a_training_run_freezes_its_start_up_and_unfreezes_at_the_end(tiny_config, tmp_path):
  frozen_seen = []

  def record(phase, info):
    if phase == "stop":
      frozen_seen.append(gc.get_freeze_count())
  gc.callbacks.append(record)
  try:
    tiny_config.num_train_steps = 2
    train.train_and_evaluate(tiny_config, str(tmp_path / "run"))
  finally:
    gc.callbacks.remove(record)
  assert max(frozen_seen) > 10_000  # jax, flax and the traced step: collections during the run skipped them
  assert gc.get_freeze_count() == 0
