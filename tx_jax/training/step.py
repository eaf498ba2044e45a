"""Train state, its sharded initialisation, and the compiled train and eval steps."""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from tx_jax import errors, parallel, xla_options


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds besides the data position."""

  step: jax.Array  # int32 scalar
  params: Any  # nnx.State of the model's nnx.Param variables
  opt_state: Any
  rng: jax.Array  # uint32 key data [2] (threefry2x32) or [4] (rbg); dropout keys are fold_in(rng, step)


# config.prng_impl: the PRNG of the dropout (and MLM masking) stream, told apart in a state by its key size.
# rbg draws with XLA's RngBitGenerator, much cheaper than threefry's hash on CPU and TPU; its bits depend
# on how an array is sharded, so only threefry2x32 gives the same dropout masks on any mesh.
PRNG_IMPLS = {2: "threefry2x32", 4: "rbg"}


def abstract_params(make_model, seed: int, mesh):
  """(graphdef, params as jax.ShapeDtypeStructs with their shardings): a restore target without an optimizer."""
  graphdef, params = nnx.split(nnx.eval_shape(lambda: make_model(nnx.Rngs(seed))), nnx.Param)
  shardings = parallel.state_shardings(params, mesh)
  return graphdef, jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params, shardings)


def plan_train_state(make_model, tx: optax.GradientTransformation, seed: int, mesh,
                     prng_impl: str = "threefry2x32"):
  """(graphdef, abstract state, shardings, make_state) from one trace of init; make_state() initialises the state.

  The abstract state is jax.ShapeDtypeStructs with the state's shardings and weak types: a restore
  target, or what the train step can be compiled for before the state exists. make_state creates
  model and optimizer directly in their shardings.
  """
  graphdefs = []  # the model's structure, taken while tracing init: one trace fewer than nnx.eval_shape first

  def init():
    graphdef, params = nnx.split(make_model(nnx.Rngs(seed)), nnx.Param)
    graphdefs.append(graphdef)  # static structure, no arrays: safe to take out of the trace
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed + 1, impl=prng_impl)))

  traced = jax.eval_shape(init)
  shardings = _state_shardings(traced, parallel.state_shardings(traced.params, mesh), mesh)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s, weak_type=a.weak_type),
                          traced, shardings)
  return graphdefs[0], abstract, shardings, lambda: jax.jit(init, out_shardings=shardings)()  # jit reuses the trace


def _state_shardings(abstract_state: TrainState, param_shardings, mesh):
  """Optimizer moments follow their parameter's sharding; everything else is replicated."""
  flat_params = {tuple(path_names(p)): s for p, s in jax.tree_util.tree_leaves_with_path(param_shardings)}

  def for_opt_leaf(path, leaf):
    path = tuple(path_names(path))
    for n in range(len(path)):  # optimizer moments' paths end with their parameter's full path
      if path[n:] in flat_params:
        return flat_params[path[n:]]
    return parallel.replicated(mesh)

  opt_shardings = jax.tree_util.tree_map_with_path(for_opt_leaf, abstract_state.opt_state)
  return TrainState(step=parallel.replicated(mesh), params=param_shardings, opt_state=opt_shardings,
                    rng=parallel.replicated(mesh))


def path_names(path) -> list:
  """The plain keys (names, indices) of a jax tree path, e.g. ['encoder', 'blocks', 0, 'kernel']."""
  return [getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path]


def step_rng(state: TrainState) -> jax.Array:
  """The key of this step (dropout, MLM masks): fold_in(state.rng, state.step)."""
  key = jax.random.wrap_key_data(state.rng, impl=PRNG_IMPLS[state.rng.shape[-1]])
  return jax.random.fold_in(key, state.step)


def summed_gradients(params, batch: dict, rng, *, graphdef, task, label_smoothing: float,
                     mask_rate: float = 0.15, grad_accum_steps: int = 1, micro_sharding=None, token_capacity=None):
  """Gradients of the *summed* loss and the metric sums of `batch`, over `grad_accum_steps` microbatches.

  Both are sums over the batch; dividing once by the total sums["tokens"] (apply_gradients) makes
  k microbatches of r rows exactly one step on r * k rows, also for token-normalised losses.
  `micro_sharding` places the stacked microbatches [k, rows / k, ...] (jit: P(None, batch axes)).
  Microbatch j draws dropout and MLM masks from fold_in(rng, j), so only without those random
  draws is the step bit-for-bit the large batch's up to summation order.
  `token_capacity` (groups, fraction, fits): the task computes without the padding where it fits
  (tx_jax.models.token_layout, tx_jax/training/padding_choice.py).
  """
  skip = {"token_capacity": token_capacity} if token_capacity is not None else {}

  def loss_sum(params, micro, key):
    sums = task.metric_sums(nnx.merge(graphdef, params), micro, label_smoothing=label_smoothing,
                            deterministic=False, rng=key, mask_rate=mask_rate, **skip)
    return sums["loss"], sums

  grad_fn = jax.grad(loss_sum, has_aux=True)
  k = grad_accum_steps
  if k == 1:
    return grad_fn(params, batch, rng)
  rows = jax.tree.leaves(batch)[0].shape[0]
  if rows % k:
    raise errors.ConfigError(f"config.grad_accum_steps={k} must divide the {rows} rows of the batch.")
  micro = microbatches(batch, k)
  if micro_sharding is not None:
    micro = jax.lax.with_sharding_constraint(micro, micro_sharding)
  _, sums_shape = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng)
  zeros = (jax.tree.map(jnp.zeros_like, params), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape))

  def accumulate(totals, xs):
    j, microbatch = xs
    return jax.tree.map(jnp.add, totals, grad_fn(params, microbatch, jax.random.fold_in(rng, j))), None

  (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(k), micro))
  return grads, sums


def microbatches(batch: dict, k: int) -> dict:
  """Leaves [rows, ...] -> [k, rows / k, ...] (numpy or jax): microbatch j holds rows j, j + k, j + 2k, ...

  Each device's contiguous rows split evenly, so no row moves between devices.
  """
  rows = jax.tree.leaves(batch)[0].shape[0]
  return jax.tree.map(lambda x: x.reshape(rows // k, k, *x.shape[1:]).swapaxes(0, 1), batch)


def apply_gradients(state: TrainState, grads, sums: dict, *, tx, schedule):
  """Divides summed gradients by the batch's token count and takes an optimizer step; returns (state, sums)."""
  grads = jax.tree.map(lambda g: g / jnp.maximum(sums["tokens"], 1.0), grads)  # normalised over non-pad tokens
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  sums = dict(sums, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step),
              steps=jnp.ones((), jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums


def train_step(state: TrainState, batch: dict, *, graphdef, tx, schedule, task, label_smoothing: float,
               mask_rate: float = 0.15, grad_accum_steps: int = 1, micro_sharding=None, token_capacity=None):
  """One optimizer step on a global batch of `task` (a tx_jax.tasks.Task); returns (state, metric sums)."""
  grads, sums = summed_gradients(state.params, batch, step_rng(state), graphdef=graphdef, task=task,
                                 label_smoothing=label_smoothing, mask_rate=mask_rate,
                                 grad_accum_steps=grad_accum_steps, micro_sharding=micro_sharding,
                                 token_capacity=token_capacity)
  return apply_gradients(state, grads, sums, tx=tx, schedule=schedule)


def eval_step(params, batch: dict, *, graphdef, task, label_smoothing: float, mask_rate: float = 0.15) -> dict:
  """Metric sums of the model on one batch, without dropout (MLM masks with a fixed key)."""
  return task.metric_sums(nnx.merge(graphdef, params), batch, label_smoothing=label_smoothing,
                          deterministic=True, mask_rate=mask_rate)


def compile_steps(graphdef, tx, schedule, shardings: TrainState, mesh, *, task, label_smoothing: float,
                  mask_rate: float = 0.15, grad_accum_steps: int = 1, token_capacity=None):
  """jax.jit-compiled train and eval steps with the state's and the batch's shardings.

  token_capacity (groups, fraction, fits): the train step skips padding in groups of rows, one
  group per batch shard (tx_jax/training/padding_choice.py makes it).
  """
  batch_sharding = parallel.batch_sharding(mesh)
  task_args = dict(task=task, label_smoothing=label_smoothing, mask_rate=mask_rate)
  micro_sharding = NamedSharding(mesh, P(None, parallel.BATCH_AXES))  # [k, rows / k, ...]
  options = xla_options.compile_options() or None  # the CPU's full vector width (tx_jax/xla_options.py)
  train = jax.jit(
    functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule, grad_accum_steps=grad_accum_steps,
                      micro_sharding=micro_sharding, token_capacity=token_capacity, **task_args),
    in_shardings=(shardings, batch_sharding), out_shardings=(shardings, parallel.replicated(mesh)),
    donate_argnums=(0,), compiler_options=options)
  evaluate = jax.jit(functools.partial(eval_step, graphdef=graphdef, **task_args),
                     in_shardings=(shardings.params, batch_sharding), out_shardings=parallel.replicated(mesh),
                     compiler_options=options)
  return train, evaluate
