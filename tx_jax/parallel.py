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


def maybe_initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None, force: bool = False) -> bool:
  """Starts jax.distributed when this is one of several processes; returns whether it did.

  Arguments (tx_jax.train's flags) win over TX_JAX_COORDINATOR, TX_JAX_NUM_PROCESSES and
  TX_JAX_PROCESS_ID. Without them, a SLURM step of several tasks, an Open MPI job or a TPU slice
  whose TPU_WORKER_HOSTNAMES lists several hosts lets JAX read the cluster's own environment;
  `force` calls jax.distributed.initialize() for clusters JAX detects but this does not (Cloud TPU
  VM slices, found through the metadata server). Must run before anything touches a JAX device.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get("TX_JAX_COORDINATOR") or None
  num_processes = num_processes or int(env.get("TX_JAX_NUM_PROCESSES") or 0) or None
  if process_id is None and env.get("TX_JAX_PROCESS_ID"):
    process_id = int(env["TX_JAX_PROCESS_ID"])
  explicit = num_processes is not None and num_processes > 1
  cluster = (int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in env) \
    or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1 \
    or len((env.get("TPU_WORKER_HOSTNAMES") or "").split(",")) > 1
  if not (explicit or cluster or force):
    return False
  if explicit and (coordinator_address is None or process_id is None):
    raise errors.ConfigError(
      f"{num_processes} processes need a coordinator address and this process's id: set TX_JAX_COORDINATOR=host:port "
      "and TX_JAX_PROCESS_ID=0..N-1 (or --coordinator_address and --process_id) in every process.")
  # CPU processes exchange collectives through gloo over TCP (jax 0.10's default, set so that a
  # new default cannot silently break multi-process CPU runs); GPUs and TPUs ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  else:
    jax.distributed.initialize()  # JAX reads the cluster's environment (SLURM, Open MPI, Cloud TPU) itself
  logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
  return True


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


def global_rows(config) -> int:
  """Rows of a global batch: config.per_device_batch_size on every device of every process."""
  return config.per_device_batch_size * jax.device_count()


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split along their first dimension over the data and fsdp axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  """Devices a batch's rows are split over: the product of the batch axes' sizes."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole value."""
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's numpy rows into global jax arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}

