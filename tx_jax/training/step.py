"""Train state, its sharded initialisation, and the compiled train and eval steps."""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tx_jax import parallel
from tx_jax.training import tasks


@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds besides the data position."""

  step: jax.Array  # int32 scalar
  params: Any  # nnx.State of the model's nnx.Param variables
  opt_state: Any
  rng: jax.Array  # uint32 key data; dropout keys are fold_in(rng, step)


def create_train_state(make_model, tx: optax.GradientTransformation, seed: int, mesh, abstract_only=False):
  """Initialises model and optimizer directly in their shardings; returns (graphdef, state, shardings).

  With `abstract_only`, the state is jax.ShapeDtypeStructs carrying shardings (a restore target).
  """
  graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: make_model(nnx.Rngs(seed))), nnx.Param)
  param_shardings = parallel.state_shardings(abstract_params, mesh)

  def init():
    params = nnx.state(make_model(nnx.Rngs(seed)), nnx.Param)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed + 1)))

  abstract = jax.eval_shape(init)
  shardings = _state_shardings(abstract, param_shardings, mesh)
  if abstract_only:
    return graphdef, jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract, shardings), shardings
  state = jax.jit(init, out_shardings=shardings)()
  return graphdef, state, shardings


def _state_shardings(abstract_state: TrainState, param_shardings, mesh):
  """Optimizer moments follow their parameter's sharding; everything else is replicated."""
  flat_params = {tuple(_path(p)): s for p, s in jax.tree_util.tree_leaves_with_path(param_shardings)}

  def for_opt_leaf(path, leaf):
    path = tuple(_path(path))
    for n in range(len(path)):  # optimizer moments' paths end with their parameter's full path
      if path[n:] in flat_params:
        return flat_params[path[n:]]
    return parallel.replicated(mesh)

  opt_shardings = jax.tree_util.tree_map_with_path(for_opt_leaf, abstract_state.opt_state)
  return TrainState(step=parallel.replicated(mesh), params=param_shardings, opt_state=opt_shardings,
                    rng=parallel.replicated(mesh))


def _path(path):
  return [getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path]


def train_step(state: TrainState, batch: dict, *, graphdef, tx, schedule, task: str, label_smoothing: float,
               mask_rate: float = 0.15):
  """One optimizer step on a global batch of `task`; returns (state, metric sums)."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)  # dropout and MLM masks

  def loss_fn(params):
    sums = tasks.metric_sums(nnx.merge(graphdef, params), batch, task=task, label_smoothing=label_smoothing,
                             deterministic=False, rng=rng, mask_rate=mask_rate)
    return sums["loss"] / jnp.maximum(sums["tokens"], 1.0), sums  # normalised over non-pad tokens

  grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  sums = dict(sums, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step),
              steps=jnp.ones((), jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums


def eval_step(params, batch: dict, *, graphdef, task: str, label_smoothing: float, mask_rate: float = 0.15) -> dict:
  """Metric sums of the model on one batch, without dropout (MLM masks with a fixed key)."""
  return tasks.metric_sums(nnx.merge(graphdef, params), batch, task=task, label_smoothing=label_smoothing,
                           deterministic=True, mask_rate=mask_rate)


def compile_steps(graphdef, tx, schedule, shardings: TrainState, mesh, *, task: str, label_smoothing: float,
                  mask_rate: float = 0.15):
  """jax.jit-compiled train and eval steps with the state's and the batch's shardings."""
  batch_sharding = parallel.batch_sharding(mesh)
  task_args = dict(task=task, label_smoothing=label_smoothing, mask_rate=mask_rate)
  train = jax.jit(
    functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule, **task_args),
    in_shardings=(shardings, batch_sharding), out_shardings=(shardings, parallel.replicated(mesh)),
    donate_argnums=(0,))
  evaluate = jax.jit(functools.partial(eval_step, graphdef=graphdef, **task_args),
                     in_shardings=(shardings.params, batch_sharding), out_shardings=parallel.replicated(mesh))
  return train, evaluate
