"""Builds a run's model, optimizer and compiled steps from its config."""

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging

from tx_jax import compilation_cache, errors, parallel, tasks
from tx_jax.models import config as model_config
from tx_jax.models import registry
from tx_jax.training import checkpoint
from tx_jax.training import compile_ahead as compile_ahead_lib
from tx_jax.training import padding_choice
from tx_jax.training import pmap_step
from tx_jax.training import run_vocab
from tx_jax.training import schedules
from tx_jax.training import step as step_lib


def build(config, mesh, abstract_only=False, compile_ahead=False):
  """Model, optimizer and compiled steps: returns (graphdef, state, train_fn, eval_fn).

  config.parallelism picks jit steps over `mesh` (step.compile_steps) or pmap steps over its
  devices (pmap_step.compile_pmap_steps); both take (state, parallel.global_batch(...)). With
  `compile_ahead` (tx_jax.train), the train step (jit's, or pmap's in one process) compiles on a
  thread while init compiles and runs, for the train batches' shapes (`abstract_train_batch`).
  """
  compilation_cache.enable(config)
  schedule = schedules.make_schedule(config)
  tx = schedules.make_optimizer(config, schedule)
  graphdef, abstract, shardings, make_state = step_lib.plan_train_state(
    lambda rngs: registry.build_model(config, rngs), tx, config.seed, mesh,
    prng_impl=config.get("prng_impl", "threefry2x32"))
  task = tasks.get(config)
  step_args = dict(task=task, label_smoothing=config.label_smoothing,
                   mask_rate=config.get("mlm_mask_rate", 0.15), grad_accum_steps=config.get("grad_accum_steps", 1))
  pmap = config.get("parallelism", "jit") == "pmap"
  if pmap:  # replicated state: the same pytree and checkpoints as jit's
    steps = lambda capacity: pmap_step.compile_pmap_steps(graphdef, tx, schedule, mesh, token_capacity=capacity,
                                                          **step_args)
  else:
    steps = lambda capacity: step_lib.compile_steps(graphdef, tx, schedule, shardings, mesh, token_capacity=capacity,
                                                    **step_args)
  _, eval_fn = steps(None)  # (jit and pmap compile on first use) evaluation always computes on the padding
  train_fn = padding_choice.train_fn(lambda capacity: steps(capacity)[0], task=task,
                                     fraction=config.get("token_capacity", 1.0),
                                     step_groups=1 if pmap else parallel.batch_shards(mesh),
                                     groups=parallel.batch_shards(mesh), grad_accum_steps=step_args["grad_accum_steps"])
  if abstract_only:
    return graphdef, abstract, train_fn, eval_fn
  if not compile_ahead or (pmap and jax.process_count() > 1):  # pmap's lowering takes process-local arrays there
    return graphdef, make_state(), train_fn, eval_fn
  with compile_ahead_lib.compiling(train_fn, abstract, abstract_train_batch(config, task, mesh), name="train step"):
    state = make_state()
  return graphdef, state, train_fn, eval_fn


def abstract_train_batch(config, task, mesh) -> dict:
  """A global train batch as jax.ShapeDtypeStructs: {feature: [global rows, ...]} of the task's rows, batch-sharded."""
  rows, sharding = parallel.global_rows(config), parallel.batch_sharding(mesh)
  row = task.empty_row(config, config.max_target_length)  # the train rows' features, shapes and dtypes
  return {k: jax.ShapeDtypeStruct((rows, *np.shape(v)), np.asarray(v).dtype, sharding=sharding) for k, v in row.items()}


def workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was started with (tx_jax.train writes WORKDIR/config.json)."""
  path = os.path.join(os.path.expanduser(workdir), "config.json")
  if not os.path.exists(path):
    raise errors.CheckpointError(f"{path} is missing: {workdir} is not a tx_jax.train workdir (train first, "
                                 "or pass the workdir that holds config.json and checkpoints/).")
  with open(path) as f:
    config = json.load(f)
  if config.get("vocab_path"):
    config["vocab_path"] = run_vocab.resolve(workdir, config["vocab_path"])  # the run's copy, or an imported tokenizer/
  return ml_collections.ConfigDict(config)


def restore_model(workdir: str, config, mesh, step: int | None = None, use_ema: bool = True):
  """(graphdef, params, step) of a run's checkpoint (newest readable without `step`), the parameters read alone.

  The params are the run's EMA when it keeps one (config.ema_decay > 0) and `use_ema`, as every
  tool reads by default (read out of the optimizer-state item, no Adam moment with it), else the raw ones.
  """
  if use_ema and config.get("ema_decay", 0.0) > 0:
    graphdef, abstract_state, _, _ = build(config, mesh, abstract_only=True)  # structure only: no state made
    return graphdef, *checkpoint.restore_ema(workdir, abstract_state, step)
  graphdef, abstract = step_lib.abstract_params(lambda rngs: registry.build_model(config, rngs),
                                                config.get("seed", 0), mesh)
  return graphdef, *checkpoint.restore_params(workdir, abstract, step)


# ModelConfig fields that change no saved array: a resumed run may change them, not the others.
RESUME_FREE_MODEL_FIELDS = ("dropout_rate", "attention_dropout_rate", "dtype", "remat", "remat_policy", "scan_layers",
                            "attention_impl", "pad_id")


def check_resumable(config, workdir: str):
  """ConfigError naming the model fields in which `config` differs from the run it resumes (WORKDIR/config.json).

  Found before anything is built: a changed model would not fit the run's checkpoints.
  """
  path = os.path.join(os.path.expanduser(workdir), "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    run = json.load(f)
  mine = json.loads(config.to_json_best_effort())
  names = [f.name for f in dataclasses.fields(model_config.ModelConfig) if f.name not in RESUME_FREE_MODEL_FIELDS]
  changed = [n for n in names if n in run and n in mine and run[n] != mine[n]]
  if changed:
    raise errors.ConfigError(
      f"{workdir} holds a run of another model: " + ", ".join(f"config.{n}={mine[n]!r} here, {run[n]!r} in its "
                                                              "config.json" for n in changed[:3])
      + "; resume with the run's model fields, or pass a new --workdir.")


# What a --config may change when evaluating a trained run: how it is evaluated, not what it is.
EVALUATION_FIELDS = ("beam_size", "length_penalty_alpha", "eval_batch_size", "max_predict_length", "num_eval_steps",
                     "max_eval_target_length", "per_device_batch_size", "mesh_shape", "parallelism", "attention_impl",
                     "num_predict_sentences", "data_workers", "data_cache_dir")


def evaluation_config(workdir: str, given=None, overridden=()) -> ml_collections.ConfigDict:
  """The config to evaluate WORKDIR's run with: its config.json, changed only where it is safe.

  From `given` (a --config), the evaluation fields apply; other fields that differ from the run's
  are reported and ignored, unless named in `overridden` (explicit --config.<field>=... flags),
  which always win.
  """
  config = workdir_config(workdir)
  if given is None:
    return config
  as_recorded = json.loads(given.to_json_best_effort())  # as config.json holds it: a --config's () is the run's []
  ignored = []
  for key, value in given.items():
    if key in overridden or key in EVALUATION_FIELDS:
      if config.get(key) != as_recorded[key]:
        logging.info("Evaluating with config.%s=%r (the run trained with %r).", key, value, config.get(key))
      try:
        config[key] = value
      except TypeError:  # config.json fixed the type of a field that takes two (token_capacity: "auto" or a number)
        del config[key]
        config[key] = value
    elif (key in config and config[key] != as_recorded[key]
          and not isinstance(value, ml_collections.ConfigDict)
          # the run recorded the vocabulary it read, where the --config may name none or the same file elsewhere
          and not (key == "vocab_path" and (not value or run_vocab.same(value, config[key])))):
      ignored.append(f"{key}={config[key]!r} (--config has {value!r})")
  if ignored:
    logging.warning("Evaluating with the run's own %s from %s/config.json; override a field explicitly with "
                    "--config.<field>=... to change it.", ", ".join(ignored), workdir)
  return config
