"""Orbax checkpoints of the train state and the data position, in WORKDIR/checkpoints.

Each step is a directory of separate Orbax items, so a reader takes only what it needs:
  params/     the model's parameters (all that evaluation, decoding, init_from and export read)
  opt_state/  the optimizer state (Adam moments, the EMA, which inference reads alone); absent in imported
              models' workdirs
  progress/   the train state's step and dropout RNG key data
  loop/       the training loop's own state (JSON: best metric, early stopping, time budget)
  data/       the data position (below)
Checkpoints written before that split hold params, opt_state, step and rng in one "state" item;
they keep restoring (train resumes from them, every tool reads their parameters), and the next
save of a resumed run writes the split layout.

The data position is each process's Grain iterator state, written by Grain's Orbax handler as
checkpoints/<step>/data/process_<i>-of-<n>.json; every file holds the states of that process's
logical data shards, so a run restarted on another process count takes its shards' states from
whichever files hold them (elastic re-sharding, as long as the count divides config.data_shards).
"""

import glob
import json
import os
import time

from etils import epath
import grain.checkpoint  # registers Grain's Orbax handler (CheckpointSave)
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from absl import logging

from tx_jax import errors
from tx_jax.training import best, ema


PARAMS_ITEM, OPT_STATE_ITEM, PROGRESS_ITEM = "params", "opt_state", "progress"
LOOP_ITEM = "loop"  # the training loop's own state (tx_jax.training.best.Tracker), JSON
DATA_ITEM = "data"
LEGACY_STATE_ITEM = "state"  # the whole train state in one item, as checkpoints held it before the split


def make_manager(workdir: str, *, max_to_keep: int = 3, read_only: bool = False, preservation_policy=None,
                 best_metric: str = "", best_mode: str = "max") -> ocp.CheckpointManager:
  """A CheckpointManager saving asynchronously, keeping the newest `max_to_keep` steps or what the policy keeps.

  With `best_metric`, saves carry metrics and `best_step()` ranks checkpoints by that metric (Orbax
  writes and reads checkpoint metrics only when it has a best_fn).
  """
  directory = os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")
  if read_only:  # neither saves nor deletes; save_interval_steps=0 spares Orbax's "read_only=True, setting ..." warnings
    kw = dict(read_only=True, create=False, save_interval_steps=0, enable_async_checkpointing=False)
  else:  # a preservation policy: Orbax deprecates CheckpointManagerOptions.max_to_keep for them
    kw = dict(preservation_policy=preservation_policy or ocp.checkpoint_managers.LatestN(max_to_keep))
  if best_metric:
    kw.update(best_fn=best.metric_fn(best_metric, best_mode), best_mode=best_mode)
  options = ocp.CheckpointManagerOptions(**kw)
  return ocp.CheckpointManager(directory, options=options)


class _DataState:
  """What Grain's handler saves for one process: its batches' state as JSON bytes, taken now."""

  def __init__(self, batches):
    self._state = batches.state_bytes()

  def get_state(self) -> bytes:
    """The state captured when the save started."""
    return self._state


def save(manager: ocp.CheckpointManager, step: int, state, batches=None, *, loop: dict | None = None,
         metrics: dict | None = None):
  """Starts saving `state` (a TrainState), this process's data position (`batches`) and the loop state at `step`.

  `metrics` (e.g. {"eval/bleu": 27.1}) rank the checkpoint for keep-best; it finishes in the background.
  Without `batches` (an averaged workdir) a run continued from it starts its data from the beginning.
  """
  items = {PARAMS_ITEM: ocp.args.StandardSave(state.params), OPT_STATE_ITEM: ocp.args.StandardSave(state.opt_state),
           PROGRESS_ITEM: ocp.args.StandardSave({"step": state.step, "rng": state.rng})}
  if batches is not None:
    items[DATA_ITEM] = grain.checkpoint.CheckpointSave(_DataState(batches))
  if loop is not None:
    items[LOOP_ITEM] = ocp.args.JsonSave(loop)
  manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def save_params(manager: ocp.CheckpointManager, step: int, params):
  """Starts saving `params` alone at `step`: a model to evaluate, decode or fine-tune from, not to resume."""
  manager.save(step, args=ocp.args.Composite(**{PARAMS_ITEM: ocp.args.StandardSave(params)}), force=True)


def _has_item(manager: ocp.CheckpointManager, step: int, item: str) -> bool:
  """Whether checkpoint `step` holds the Orbax item `item` (tells the layouts apart)."""
  return (epath.Path(manager.directory) / str(step) / item).exists()


def loop_state(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The loop item saved at `step` (None for checkpoints without one, e.g. those of older runs)."""
  if not _has_item(manager, step, LOOP_ITEM):
    return None
  try:
    return manager.restore(step, args=ocp.args.Composite(**{LOOP_ITEM: ocp.args.JsonRestore()}))[LOOP_ITEM]
  except Exception as e:  # pylint: disable=broad-except  (a damaged JSON file; Orbax raises several types)
    raise errors.CheckpointError(f"the loop state (training clock, keep-best) of checkpoint step {step} in "
                                 f"{manager.directory} is unreadable ({type(e).__name__}).") from None


def data_state(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The data position saved at `step` for this process's shards: {"data_shards", "shards"}; None if none.

  Merges the files of every process of the saving run, so a different process count finds its
  shards' states. Checkpoints of the pipeline before Grain (one {"epoch", "index"}) give None.
  """
  directory = os.path.join(str(manager.directory), str(step), DATA_ITEM)
  files = sorted(glob.glob(os.path.join(directory, "process_*-of-*.json")))
  if not files:
    if os.path.isdir(directory):
      logging.warning("The checkpoint at step %d stores its data position in the old format; the data "
                      "pipeline starts again from its beginning.", step)
    return None
  merged = {"shards": {}}
  for path in files:
    try:
      with open(path) as f:
        state = json.load(f)
    except (OSError, ValueError) as e:
      raise errors.CheckpointError(f"The data position {path} is unreadable ({e}); delete checkpoint step {step} "
                                   "to resume from the one before.") from None
    merged["data_shards"] = state["data_shards"]
    merged["shards"].update(state["shards"])
  return merged


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None, *, set_aside: bool = False):
  """Restores (state, data position or None) at `step` (newest readable when None) into `abstract_state`'s shardings.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings, or of arrays to take them from.
  Without a `step`, a newest checkpoint that cannot be read (a truncated, missing or garbled file,
  non-finite values) is reported, naming the step and the cause, and the one before is tried;
  with `set_aside` (training) such a step's directory is renamed to corrupt_<step>_<time> so no
  later save overwrites it and no good checkpoint is rotated away in its place. An explicit
  unreadable `step` is one error.
  """
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state)
  on_unreadable = (lambda candidate: _set_aside(manager, candidate)) if set_aside else None
  # Resuming reads the newest step's loop item too: damaged, it makes the step unreadable like damaged arrays.
  read = lambda candidate: _restore_step(manager, target, candidate, with_loop=step is None)
  return _newest_readable(manager, step, read, on_unreadable)


def require_step(manager: ocp.CheckpointManager, step: int | None = None) -> list:
  """The manager's saved steps; CheckpointError naming the fix when there is none (or not `step`)."""
  steps = sorted(manager.all_steps())
  if step is not None and step not in steps or not steps:
    raise errors.CheckpointError(
      f"No checkpoint{'' if step is None else f' at step {step}'} in {manager.directory} "
      f"(saved steps: {steps or 'none'}); train first with python -m tx_jax.train "
      f"--workdir=... or pass a --step that exists.")
  return steps


def _newest_readable(manager: ocp.CheckpointManager, step: int | None, read, on_unreadable=None):
  """read(step) of exactly `step`, or without one of the newest step it does not raise CheckpointError for.

  Each unreadable step is logged before the one before it is tried, and handed to `on_unreadable`
  once an older step has been read: when none can be, the cause is more likely shared (storage,
  permissions) than damage to each, so every step stays where it is for the next attempt.
  """
  steps = sorted(require_step(manager, step), reverse=True)
  if step is not None:
    return read(step)
  first_error, unreadable = None, []
  for candidate in steps:
    try:
      result = read(candidate)
    except errors.CheckpointError as e:
      first_error = first_error or e
      unreadable.append(candidate)
      logging.warning("Checkpoint step %d is unreadable, falling back to the one before: %s", candidate, e)
      continue
    for bad in unreadable if on_unreadable else ():
      on_unreadable(bad)
    return result
  raise errors.CheckpointError(f"No readable checkpoint in {manager.directory} (tried steps {steps}, all left in "
                               f"place); the newest failed with: {first_error}")


def _restore_step(manager: ocp.CheckpointManager, target, step: int, with_loop: bool = False):
  """(state, data position) of one step, checked finite; CheckpointError naming the step and the cause.

  `with_loop`: the step's loop item must be readable too (training reads it next).
  """
  if not _has_item(manager, step, LEGACY_STATE_ITEM) and not _has_item(manager, step, OPT_STATE_ITEM):
    if _has_item(manager, step, PARAMS_ITEM):  # not damage, so not a CheckpointError: it must not be set aside
      raise errors.ConfigError(
        f"The checkpoint at step {step} in {manager.directory} holds parameters only (an imported model), no "
        f"optimizer state to resume training from; fine-tune it in a new workdir with --config.init_from="
        f"{os.path.dirname(str(manager.directory))}.")
  try:
    if _has_item(manager, step, LEGACY_STATE_ITEM):
      state = manager.restore(step, args=ocp.args.Composite(
        **{LEGACY_STATE_ITEM: ocp.args.StandardRestore(target)}))[LEGACY_STATE_ITEM]
    else:
      restored = manager.restore(step, args=ocp.args.Composite(**{
        PARAMS_ITEM: ocp.args.StandardRestore(target.params),
        OPT_STATE_ITEM: ocp.args.StandardRestore(target.opt_state),
        PROGRESS_ITEM: ocp.args.StandardRestore({"step": target.step, "rng": target.rng})}))
      progress = restored[PROGRESS_ITEM]
      state = target.replace(step=progress["step"], params=restored[PARAMS_ITEM],
                             opt_state=restored[OPT_STATE_ITEM], rng=progress["rng"])
  except Exception as e:  # pylint: disable=broad-except  (Orbax and TensorStore raise several types, some bare)
    mismatch = _saved_tree_mismatch(manager, step, target)
    if mismatch:  # the config's mistake, not damage: a ConfigError, so the step is neither skipped nor set aside
      raise errors.ConfigError(
        f"The checkpoint at step {step} in {manager.directory} holds another model or optimizer state than this "
        f"config builds ({mismatch}); resume with the config the run started with (its config.json), or pass a new "
        "--workdir.") from None
    raise errors.CheckpointError(
      f"the checkpoint at step {step} in {manager.directory} is unreadable ({type(e).__name__}: "
      f"{' '.join(str(e).split())[:300]}); pick another --step.") from None
  _check_finite(manager, step, state)
  if with_loop:
    loop_state(manager, step)
  logging.info("Restored checkpoint step %d from %s", step, manager.directory)
  return state, data_state(manager, step)


def _leaf_shapes(tree) -> dict:
  """{dotted leaf path: shape} of a pytree of arrays, or of the array metadata Orbax saved for one."""
  def name(key):
    return str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key))))
  return {".".join(map(name, path)): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _saved_tree_mismatch(manager: ocp.CheckpointManager, step: int, target) -> str:
  """How `target` differs from the arrays checkpoint `step` saved, by their metadata; '' if it fits or is unreadable.

  Tells a config that builds another model or optimizer (a user's mistake: the checkpoint must be
  kept) from a damaged checkpoint (whose metadata is unreadable, or fits while its data does not).
  """
  if _has_item(manager, step, LEGACY_STATE_ITEM):
    wanted = {LEGACY_STATE_ITEM: target}
  else:
    wanted = {PARAMS_ITEM: target.params, OPT_STATE_ITEM: target.opt_state,
              PROGRESS_ITEM: {"step": target.step, "rng": target.rng}}
  for item, tree in wanted.items():
    try:
      metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(manager.directory) / str(step) / item)
      saved = _leaf_shapes(getattr(metadata, "tree", metadata))
    except Exception:  # pylint: disable=broad-except  (unreadable metadata: damage, not a mismatch)
      return ""
    mine = _leaf_shapes(tree)
    resized = sorted(k for k in saved.keys() & mine.keys() if saved[k] != mine[k])
    if resized:
      return ", ".join(f"{item} {k} is {list(saved[k])} there, {list(mine[k])} here" for k in resized[:2])
    if saved.keys() != mine.keys():
      extra = sorted(saved.keys() - mine.keys())[:1] or sorted(mine.keys() - saved.keys())[:1]
      return f"{item} holds {len(saved)} arrays there, {len(mine)} here (e.g. {extra[0]})"
  return ""


def _check_finite(manager: ocp.CheckpointManager, step: int, tree):
  """CheckpointError naming the step and the leaves when `tree`, restored from `step`, holds a NaN or infinity."""
  bad = non_finite_leaves(tree)
  if bad:
    raise errors.CheckpointError(f"the checkpoint at step {step} in {manager.directory} holds non-finite values in "
                                 f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} (damaged files or a diverged "
                                 "run); pick another --step.")


def _checked_read(manager: ocp.CheckpointManager, candidate: int, what: str, read, fix: str):
  """(read(), candidate), checked finite; an Orbax or TensorStore failure is one CheckpointError naming `what` and `fix`."""
  try:
    tree = read()
  except Exception as e:  # pylint: disable=broad-except  (Orbax and TensorStore raise several types)
    raise errors.CheckpointError(
      f"{what} at step {candidate} in {manager.directory} do not fit this config's model or are unreadable "
      f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); {fix}") from None
  _check_finite(manager, candidate, tree)
  logging.info("Restored %s of checkpoint step %d from %s", what, candidate, manager.directory)
  return tree, candidate


def restore_params(workdir: str, abstract_params=None, step: int | None = None):
  """(params, step) of a checkpoint, reading the parameters alone (no optimizer state, no Adam moments).

  The "params" item (of a checkpoint of the old layout, Orbax's partial restore of the "state" item's
  params sub-tree), into `abstract_params`' structure and shardings, or as saved (nested dicts of
  arrays) without it. Newest readable step when `step` is None (unreadable newer ones are reported
  and skipped, as in `restore`), else exactly `step`.
  """
  manager = make_manager(workdir, read_only=True)
  target = None if abstract_params is None else jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_params)

  def read_params(candidate):
    # A fresh manager per read: Orbax binds an item name to one handler, and `restore` uses another.
    reader = make_manager(workdir, read_only=True)
    if not _has_item(manager, candidate, LEGACY_STATE_ITEM):
      return reader.restore(candidate, args=ocp.args.Composite(
        **{PARAMS_ITEM: ocp.args.StandardRestore(target)}))[PARAMS_ITEM]
    if target is None:
      return reader.restore(candidate, args=ocp.args.Composite(
        **{LEGACY_STATE_ITEM: ocp.args.StandardRestore()}))[LEGACY_STATE_ITEM]["params"]
    legacy = {"params": target}
    restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), legacy)
    restored = reader.restore(candidate, args=ocp.args.Composite(**{LEGACY_STATE_ITEM: ocp.args.PyTreeRestore(
      item=legacy, restore_args=restore_args, partial_restore=True)}))
    return jax.tree.unflatten(jax.tree.structure(abstract_params),
                              jax.tree.leaves(restored[LEGACY_STATE_ITEM]["params"]))

  def read(candidate):
    return _checked_read(manager, candidate, "the parameters", lambda: read_params(candidate),
                         "check the workdir's config.json, or pick another --step.")

  return _newest_readable(manager, step, read)


def restore_ema(workdir: str, abstract_state, step: int | None = None):
  """(the parameters' EMA, step) of a checkpoint, read alone from its optimizer state: no Adam moment is read.

  `abstract_state` is the run's TrainState as jax.ShapeDtypeStructs with shardings; only its
  opt_state's ema.EmaState is restored (every other leaf is an Orbax PLACEHOLDER, which Orbax skips).
  Checkpoints of the old one-item layout keep their EMA inside that item and are read whole.
  """
  manager = make_manager(workdir, read_only=True)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state)
  ema_only = jax.tree.map(  # the optimizer state's tree, every leaf skipped but the average's own
    lambda x: ema.EmaState(count=ocp.PLACEHOLDER, ema=x.ema) if isinstance(x, ema.EmaState) else ocp.PLACEHOLDER,
    target.opt_state, is_leaf=lambda x: isinstance(x, ema.EmaState))

  def read_ema(candidate):
    reader = make_manager(workdir, read_only=True)  # a fresh manager: Orbax binds an item name to one handler
    restore_args = jax.tree.map(lambda x: x if x is ocp.PLACEHOLDER else ocp.ArrayRestoreArgs(sharding=x.sharding),
                                ema_only)
    restored = reader.restore(candidate, args=ocp.args.Composite(**{OPT_STATE_ITEM: ocp.args.PyTreeRestore(
      item=ema_only, restore_args=restore_args)}))[OPT_STATE_ITEM]
    return ema.find(restored).ema

  def read(candidate):
    if _has_item(manager, candidate, LEGACY_STATE_ITEM):
      state, _ = _restore_step(manager, target, candidate)
      return ema.find(state.opt_state).ema, candidate
    return _checked_read(manager, candidate, "the EMA parameters", lambda: read_ema(candidate),
                         "check the workdir's config.json, pick another --step, or pass --use_ema=false for the raw "
                         "parameters.")

  return _newest_readable(manager, step, read)


def non_finite_leaves(tree) -> list:
  """Paths of the floating-point leaves of `tree` holding a NaN or infinity."""
  bad = []
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    if jnp.issubdtype(x.dtype, jnp.floating) and not bool(jnp.isfinite(x).all()):
      bad.append(jax.tree_util.keystr(path))
  return bad


def _set_aside(manager: ocp.CheckpointManager, step: int):
  """Renames an unreadable step's directory out of the manager's sight (kept, for inspection)."""
  source = os.path.join(str(manager.directory), str(step))
  dest = os.path.join(str(manager.directory), f"corrupt_{step}_{time.strftime('%Y%m%d-%H%M%S')}")
  if jax.process_index() == 0 and os.path.isdir(source):
    os.rename(source, dest)
    logging.warning("Moved the unreadable checkpoint step %d to %s.", step, dest)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
  manager.reload()
