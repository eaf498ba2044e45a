"""Checkpoint averaging: the mean of the parameters of a run's newest N checkpoints (fairseq's recipe).

The Transformer results of Vaswani et al. and fairseq average the last checkpoints of a run
before decoding; the mean is taken leaf by leaf in float32 and cast back to each leaf's dtype.
Orbax has no averaging, so the loop over steps is written here; each step's parameters are read
alone with tx_jax.training.checkpoint's checked restore (an unreadable step is an error, not
skipped: an average must say exactly which steps it holds).
"""

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from tx_jax import errors
from tx_jax.training import checkpoint


def last_steps(manager: ocp.CheckpointManager, last: int) -> list:
  """The newest `last` saved steps, oldest first; CheckpointError when the run has fewer."""
  if isinstance(last, bool) or not isinstance(last, int) or last < 1:
    raise errors.ConfigError(f"--last / --average_last={last!r} must be a positive number of checkpoints.")
  steps = sorted(manager.all_steps())
  if len(steps) < last:
    raise errors.CheckpointError(
      f"{manager.directory} holds {len(steps)} checkpoint(s) (steps {steps or 'none'}), fewer than the {last} to "
      "average; average fewer, or keep more with --config.max_checkpoints_to_keep when training.")
  return steps[-last:]


def average_params(workdir: str, abstract_params, steps: list):
  """The mean of the parameters of `workdir`'s checkpoints at `steps`, read alone (no optimizer state)."""
  total = None
  for step in steps:
    params, _ = checkpoint.restore_params(workdir, abstract_params, step)
    as_f32 = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    total = as_f32 if total is None else jax.tree.map(jnp.add, total, as_f32)
    newest = params
  return jax.tree.map(lambda s, p: (s / len(steps)).astype(p.dtype), total, newest)
