"""An exponential moving average of the parameters, kept as the last link of the optimizer chain.

optax has no EMA-of-parameters transformation (`optax.ema` averages the *updates*), so this one is
written here, around optax's own `incremental_update`. Living in the optimizer state, the average
is checkpointed with it, sharded like the parameters (optimizer leaves follow their parameter's
sharding, tx_jax.training.step) and updated inside the compiled step, jit or pmap, at no extra
host cost. The decay warms up as min(decay, (1 + t) / (10 + t)), so the average does not stay
anchored to the random initialisation for the first ~1/(1 - decay) steps.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class EmaState(NamedTuple):
  """The step count t and the average of the parameters after each of the t updates."""

  count: jax.Array  # int32 scalar
  ema: Any  # the same tree as the parameters


def ema_of_params(decay: float) -> optax.GradientTransformation:
  """A pass-through transformation whose state holds the EMA of the parameters the updates produce.

  Must be the last link of an optax.chain, so that `updates` are the final ones.
  """

  def init(params):
    return EmaState(count=jnp.zeros((), jnp.int32), ema=jax.tree.map(jnp.copy, params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("ema_of_params needs the parameters: call tx.update(grads, opt_state, params).")
    new_params = optax.apply_updates(params, updates)
    t = state.count.astype(jnp.float32)
    rate = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
    ema = optax.incremental_update(new_params, state.ema, step_size=1.0 - rate)
    return updates, EmaState(count=state.count + 1, ema=ema)

  return optax.GradientTransformation(init, update)


def find(opt_state) -> EmaState | None:
  """The EmaState inside an optimizer state (None when the run keeps no average)."""
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, EmaState))
           if isinstance(x, EmaState)]
  return found[0] if found else None


def inference_params(state, use_ema: bool = True):
  """The parameters to evaluate and decode with: the EMA when the run keeps one and `use_ema`, else the raw ones."""
  averaged = find(state.opt_state) if use_ema else None
  return state.params if averaged is None else averaged.ema


def with_average(opt_state, params):
  """The optimizer state with its EMA (if any) replaced by `params`, so the tools that read the EMA read them."""
  is_ema = lambda x: isinstance(x, EmaState)
  return jax.tree.map(lambda x: x._replace(ema=params) if is_ema(x) else x, opt_state, is_leaf=is_ema)
