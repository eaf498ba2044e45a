"""Builds a run's model, optimizer and compiled steps from its config."""

from tx_jax.models import registry
from tx_jax.training import schedules
from tx_jax.training import step as step_lib


def build(config, mesh, abstract_only=False):
  """Model, optimizer and compiled steps: returns (graphdef, state, train_fn, eval_fn)."""
  schedule = schedules.make_schedule(config)
  tx = schedules.make_optimizer(config, schedule)
  graphdef, state, shardings = step_lib.create_train_state(
    lambda rngs: registry.build_model(config, rngs), tx, config.seed, mesh, abstract_only)
  train_fn, eval_fn = step_lib.compile_steps(graphdef, tx, schedule, shardings, mesh, config.label_smoothing)
  return graphdef, state, train_fn, eval_fn
