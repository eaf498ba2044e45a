"""Orbax checkpoints of the train state and the data position, in WORKDIR/checkpoints."""

import os

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


def save(manager: ocp.CheckpointManager, step: int, state, data_state: dict):
  """Starts saving `state` and the data position at `step` (finishes in the background)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=ocp.args.JsonSave(data_state)), force=True)


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restores (state, data position) at `step` (newest when None) into the shardings of `abstract_state`.

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
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                             data=ocp.args.JsonRestore()))
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise errors.CheckpointError(
      f"The checkpoint at step {step} in {manager.directory} does not fit this config's model or is "
      f"unreadable ({type(e).__name__}: {str(e)[:300]}); check --config matches the one used for "
      f"training, or pick another --step.") from None
  logging.info("Restored checkpoint step %d from %s", step, manager.directory)
  return restored["state"], restored["data"]
