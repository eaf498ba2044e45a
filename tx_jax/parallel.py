"""Device mesh, logical-axis sharding rules, and global arrays from process-local batches."""

import math
import os

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tx_jax import errors

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both

# Logical parameter axes (tx_jax.models.config) -> mesh axes.
LOGICAL_AXIS_RULES = (
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("embed", "fsdp"),
)


def maybe_initialize_distributed():
  """Starts jax.distributed when launched as one of several processes (flags or cluster env)."""
  if int(os.environ.get("TX_JAX_NUM_PROCESSES", "1")) > 1:
    jax.distributed.initialize(
      coordinator_address=os.environ["TX_JAX_COORDINATOR"],
      num_processes=int(os.environ["TX_JAX_NUM_PROCESSES"]),
      process_id=int(os.environ["TX_JAX_PROCESS_ID"]))
  elif any(k in os.environ for k in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES")) and \
      int(os.environ.get("SLURM_NTASKS", "2")) > 1:
    jax.distributed.initialize()  # JAX reads the cluster's environment itself


def make_mesh(mesh_shape=(-1, 1, 1), devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all); one -1 entry takes the remaining ones."""
  shape = list(mesh_shape)
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape) or len(shape) != 3:
    raise errors.ConfigError(f"config.mesh_shape={tuple(mesh_shape)} must be 3 positive sizes for "
                             f"{MESH_AXES}, at most one of them -1 (= the remaining devices).")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    shape[shape.index(-1)] = n // known
  if math.prod(shape) != n:
    raise errors.ConfigError(f"config.mesh_shape={tuple(mesh_shape)} needs {math.prod(shape)} devices "
                             f"but there are {n}; make the sizes multiply to {n} or use -1.")
  # Auto axes: XLA partitions the computation from the shardings of inputs and outputs.
  mesh = jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=devices)
  logging.info("Mesh %s over %d %s devices (%d processes)", dict(zip(MESH_AXES, shape)), n,
               jax.devices()[0].platform, jax.process_count())
  return mesh


def state_shardings(abstract_state, mesh: Mesh):
  """NamedShardings for an nnx State whose variables carry logical-axis annotations."""
  with nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
    specs = nnx.get_partition_spec(abstract_state)
  return jax.tree.map(lambda spec: NamedSharding(mesh, _fit(spec, mesh)), specs,
                      is_leaf=lambda x: isinstance(x, P))


def _fit(spec: P, mesh: Mesh) -> P:
  """Drops mesh axes of size 1 so small meshes replicate instead of naming idle axes."""
  return P(*[None if a is None or mesh.shape[a] == 1 else a for a in spec])


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split along their first dimension over the data and fsdp axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole value."""
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's numpy rows into global jax arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}

