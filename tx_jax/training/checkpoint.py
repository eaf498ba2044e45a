"""Orbax checkpoints of the train state and the data position, in WORKDIR/checkpoints.

The data position is each process's Grain iterator state, written by Grain's Orbax handler as
checkpoints/<step>/data/process_<i>-of-<n>.json; every file holds the states of that process's
logical data shards, so a run restarted on another process count takes its shards' states from
whichever files hold them (elastic re-sharding, as long as the count divides config.data_shards).
"""

import glob
import json
import os

import grain.checkpoint  # registers Grain's Orbax handler (CheckpointSave)
import jax
import orbax.checkpoint as ocp
from absl import logging

from tx_jax import errors


def make_manager(workdir: str, *, max_to_keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager keeping the newest `max_to_keep` steps, saving asynchronously."""
  directory = os.path.join(os.path.abspath(os.path.expanduser(workdir)), "checkpoints")
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         read_only=read_only, enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(directory, options=options)


class _DataState:
  """What Grain's handler saves for one process: its batches' state as JSON bytes, taken now."""

  def __init__(self, batches):
    self._state = batches.state_bytes()

  def get_state(self) -> bytes:
    """The state captured when the save started."""
    return self._state


def save(manager: ocp.CheckpointManager, step: int, state, batches):
  """Starts saving `state` and this process's data position (`batches`) at `step` (finishes in the background)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=grain.checkpoint.CheckpointSave(_DataState(batches))), force=True)


def data_state(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """The data position saved at `step` for this process's shards: {"data_shards", "shards"}; None if none.

  Merges the files of every process of the saving run, so a different process count finds its
  shards' states. Checkpoints of the pipeline before Grain (one {"epoch", "index"}) give None.
  """
  directory = os.path.join(str(manager.directory), str(step), "data")
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


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restores (state, data position or None) at `step` (newest when None) into the shardings of `abstract_state`.

  `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings, or of arrays to take them from.
  """
  steps = manager.all_steps()
  if step is None:
    step = manager.latest_step()
  if step is None or step not in steps:
    raise errors.CheckpointError(
      f"No checkpoint{'' if step is None else f' at step {step}'} in {manager.directory} "
      f"(saved steps: {sorted(steps) or 'none'}); train first with python -m tx_jax.train "
      f"--workdir=... or pass a --step that exists.")
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract_state)
  try:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise errors.CheckpointError(
      f"The checkpoint at step {step} in {manager.directory} does not fit this config's model or is "
      f"unreadable ({type(e).__name__}: {str(e)[:300]}); check --config matches the one used for "
      f"training, or pick another --step.") from None
  logging.info("Restored checkpoint step %d from %s", step, manager.directory)
  return restored["state"], data_state(manager, step)
