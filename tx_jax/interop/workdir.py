"""Writes and reads an imported model as a tx_jax workdir: config.json and an Orbax checkpoint.

The one place that knows the checkpoint layout for imported weights: the "state" item of
tx_jax.training.checkpoint (a train state: step 0, the params, no optimizer state) and no data
position. Every entry point reads the parameters alone (checkpoint.restore_params); fine-tuning
starts a new workdir from it with --config.init_from, which builds its own optimizer.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp

from tx_jax import errors
from tx_jax.training import checkpoint
from tx_jax.training import step as step_lib

IMPORT_STEP = 0
# Tokenizer files copied to W/tokenizer/ when the HF directory has them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "vocab.txt",
                   "merges.txt", "tokenizer.model", "source.spm", "target.spm")


def write_workdir(workdir: str, config_dict: dict, params):
  """Writes WORKDIR/config.json (the flat config) and `params` as the step-0 checkpoint in WORKDIR/checkpoints."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config_dict, f, indent=2)
  state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=optax.EmptyState(),  # no optimizer state: inference and init_from read params
                              rng=jax.random.key_data(jax.random.key(config_dict.get("seed", 0) + 1)))
  manager = checkpoint.make_manager(workdir, max_to_keep=1)
  manager.save(IMPORT_STEP, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
  manager.wait_until_finished()
  manager.close()


def read_workdir(workdir: str, step: int | None = None):
  """(flat config dict, params as a nested dict of arrays) of a tx_jax workdir's checkpoint (newest step)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise errors.CheckpointError(f"{path} is missing: {workdir} is not a tx_jax workdir.")
  with open(path) as f:
    config = json.load(f)
  manager = checkpoint.make_manager(workdir, read_only=True)
  step = manager.latest_step() if step is None else step
  if step is None or step not in manager.all_steps():
    raise errors.CheckpointError(f"No checkpoint{'' if step is None else f' at step {step}'} in {manager.directory}.")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  state = restored["state"]
  params = state["params"] if isinstance(state, dict) else state.params
  return config, params


def copy_tokenizer(src_dir: str, dst_dir: str) -> list:
  """Copies the tokenizer files of TOKENIZER_FILES that `src_dir` has into `dst_dir`; returns their names."""
  names = [n for n in TOKENIZER_FILES if os.path.exists(os.path.join(src_dir, n))]
  if names:
    os.makedirs(dst_dir, exist_ok=True)
  for name in names:
    shutil.copyfile(os.path.join(src_dir, name), os.path.join(dst_dir, name))
  return names
