"""The collector's freezing: garbage collected first, live objects out of the passes, unfrozen after a run."""

import gc
import sys
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
    assert count >= gc.get_freeze_count() > python_gc.INTERPRETER_FROZEN
    assert not _tracked(alive)
    later = Node()
    assert _tracked(later)  # what is made after a freeze is collected as usual
  assert gc.get_freeze_count() == 0 and _tracked(alive)  # all unfrozen, the interpreter's own included


def test_a_callers_own_freeze_is_left_in_place():
  gc.freeze()
  try:
    with python_gc.thawed_at_exit():
      python_gc.freeze()
    assert gc.get_freeze_count() > python_gc.INTERPRETER_FROZEN
  finally:
    gc.unfreeze()


def test_a_training_run_freezes_before_building_after_its_first_step_and_evaluating(tiny_config, tmp_path,
                                                                                    monkeypatch):
  frozen = []  # (the function that froze, the number of objects frozen by then)
  freeze = python_gc.freeze

  def recording_freeze():
    frozen.append((sys._getframe(1).f_code.co_name, freeze()))
    return frozen[-1][1]
  monkeypatch.setattr(python_gc, "freeze", recording_freeze)
  tiny_config.num_train_steps, tiny_config.eval_every_steps = 3, 2
  train.train_and_evaluate(tiny_config, str(tmp_path / "run"))
  # Before experiment.build and after step 1 (in _train itself), then after the evaluations of steps 2 and 3.
  assert [where for where, _ in frozen] == ["_train", "_train", "evaluate_and_keep_best", "evaluate_and_keep_best"]
  assert frozen[0][1] > 50_000  # jax, flax and the corpus's set-up: the collections while tracing skip them
  assert frozen[1][1] > frozen[0][1]  # and then the traced steps too
  assert gc.get_freeze_count() == 0  # unfrozen at the end: this process's collector is as it was
