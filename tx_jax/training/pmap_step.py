"""Plain data parallelism with jax.pmap (config.parallelism="pmap"), called like step.compile_steps's.

The state stays replicated: every device holds all of it and the pmapped functions broadcast it
(in_axes=None) and return it unmapped (out_axes=None), so there is no leading device axis to
strip. The state is therefore the same pytree of globally replicated arrays that jit uses on a
(devices, 1, 1) mesh, and checkpoints are interchangeable between the two modes.

Each device sums loss and gradients over its own rows (step.summed_gradients, with the same
gradient accumulation); the sums are added over devices and divided once by the global token
count, which is what jit computes. (A pmean of per-device *normalised* gradients would weight a
device's tokens by 1 / its own token count, and packed rows hold different numbers of tokens.)
Dropout and MLM masks are drawn per device (the step key folded with the device index), so with
those on, pmap and jit make different random draws; without them they give the same step.
"""

import functools

import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from tx_jax import errors, parallel
from tx_jax.training import step as step_lib

AXIS = "devices"  # the pmapped axis: one entry per device


def check_data_only_mesh(mesh):
  """Raises ConfigError unless every mesh axis but `data` has size 1 (pmap is data parallelism only)."""
  if any(mesh.shape[a] != 1 for a in parallel.MESH_AXES[1:]):
    raise errors.ConfigError(
      f"config.parallelism='pmap' replicates the model on every device, so config.mesh_shape must be "
      f"(-1, 1, 1), not {tuple(mesh.shape.values())}; use parallelism='jit' to shard over fsdp/tensor.")


def pmap_train_step(state, batch: dict, *, graphdef, tx, schedule, task, label_smoothing: float,
                    mask_rate: float = 0.15, grad_accum_steps: int = 1, token_capacity=None):
  """One step on this device's rows [rows / devices, len]; gradients and metric sums added over devices."""
  rng = jax.random.fold_in(step_lib.step_rng(state), jax.lax.axis_index(AXIS))  # own dropout per device
  grads, sums = step_lib.summed_gradients(state.params, batch, rng, graphdef=graphdef, task=task,
                                          label_smoothing=label_smoothing, mask_rate=mask_rate,
                                          grad_accum_steps=grad_accum_steps, token_capacity=token_capacity)
  grads, sums = jax.lax.psum((grads, sums), AXIS)  # global sums: identical on every device from here on
  return step_lib.apply_gradients(state, grads, sums, tx=tx, schedule=schedule)


def pmap_eval_step(params, batch: dict, **task_args) -> dict:
  """Metric sums of the model on this device's rows, added over devices."""
  return jax.lax.psum(step_lib.eval_step(params, batch, **task_args), AXIS)


def compile_pmap_steps(graphdef, tx, schedule, mesh, *, task, label_smoothing: float,
                       mask_rate: float = 0.15, grad_accum_steps: int = 1, token_capacity=None):
  """jax.pmap train and eval steps over the mesh's devices; they take and return what jit's steps do.

  Inputs: the replicated state (or params) and a global batch from parallel.global_batch
  [rows, len], which is reshaped to the per-device batch [devices, rows / devices, len].
  token_capacity (1, fraction, fits): each device skips the padding of its own rows.
  """
  check_data_only_mesh(mesh)
  devices = tuple(mesh.devices.flat)
  n = len(devices)
  task_args = dict(task=task, label_smoothing=label_smoothing, mask_rate=mask_rate)
  pmap = functools.partial(jax.pmap, axis_name=AXIS, in_axes=(None, 0), devices=devices, axis_size=n)
  train = pmap(functools.partial(pmap_train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                                 grad_accum_steps=grad_accum_steps,
                                 token_capacity=token_capacity, **task_args),
               out_axes=(None, None), donate_argnums=(0,))
  evaluate = pmap(functools.partial(pmap_eval_step, graphdef=graphdef, **task_args), out_axes=None)
  # [rows, len] sharded over the devices -> [devices, rows / devices, len]: a local reshape, no data moves.
  per_device = jax.jit(lambda batch: jax.tree.map(lambda x: x.reshape(n, -1, *x.shape[1:]), batch),
                       out_shardings=NamedSharding(mesh, P(parallel.MESH_AXES[0])))

  def on_mesh(state):
    """pmap's output state rewrapped, without copying, as arrays replicated on `mesh`.

    pmap returns it on its own 1-D mesh (process-local with several processes); keeping one
    sharding lets the step compile once and keeps checkpoints in jit's layout.
    """
    if jax.process_count() > 1:
      return multihost_utils.host_local_array_to_global_array(state, mesh, P())
    return jax.device_put(state, parallel.replicated(mesh))

  def train_fn(state, batch):
    state, sums = train(state, per_device(batch))
    return on_mesh(state), sums

  def lower(state, batch):
    """train's lowering for this state and global batch, arrays or jax.ShapeDtypeStructs (compile_ahead).

    It compiles the batch's reshape for them too, so that a call after the lowering's compile compiles nothing.
    """
    per_device.lower(batch).compile()
    return train.lower(state, jax.eval_shape(per_device, batch))

  train_fn.lower = lower  # as jit's step has (padding_choice, compile_ahead)

  def eval_fn(params, batch):
    return evaluate(params, per_device(batch))

  return train_fn, eval_fn
