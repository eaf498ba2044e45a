"""Writes and reads an imported model as a tx_jax workdir: config.json and an Orbax checkpoint.

An imported model's checkpoint is step 0 with the "params" item of tx_jax.training.checkpoint
alone: no optimizer state, step, RNG or data position. Every entry point reads the parameters
alone (checkpoint.restore_params); fine-tuning starts a new workdir from it with
--config.init_from, which builds its own optimizer.
"""

import json
import os
import shutil

import ml_collections
from flax import nnx

from tx_jax import errors, parallel, tasks
from tx_jax.training import checkpoint, experiment, run_vocab

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
  manager = checkpoint.make_manager(workdir, max_to_keep=1)
  checkpoint.save_params(manager, IMPORT_STEP, params)
  manager.wait_until_finished()
  manager.close()


def read_workdir(workdir: str, step: int | None = None, use_ema: bool = True):
  """(flat config dict, params as a nested dict of arrays) of a tx_jax workdir's checkpoint (newest step).

  The params are the run's EMA when it keeps one (config.ema_decay > 0) and `use_ema`, as
  evaluate, translate and generate read by default; else the raw parameters, as saved.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise errors.CheckpointError(f"{path} is missing: {workdir} is not a tx_jax workdir.")
  with open(path) as f:
    config = json.load(f)
  if use_ema and config.get("ema_decay", 0.0) > 0:  # the EMA alone, out of the optimizer-state item
    _, averaged, _ = experiment.restore_model(workdir, ml_collections.ConfigDict(config),  # its model fields
                                              parallel.make_mesh((-1, 1, 1)), step)
    return config, nnx.to_pure_dict(averaged)
  params, _ = checkpoint.restore_params(workdir, None, step)  # as saved: nested dicts of arrays
  return config, params


def copy_tokenizer(src_dir: str, dst_dir: str) -> list:
  """Copies the tokenizer files of TOKENIZER_FILES that `src_dir` has into `dst_dir`; returns their names."""
  names = [n for n in TOKENIZER_FILES if os.path.exists(os.path.join(src_dir, n))]
  if names:
    os.makedirs(dst_dir, exist_ok=True)
  for name in names:
    shutil.copyfile(os.path.join(src_dir, name), os.path.join(dst_dir, name))
  return names


def vocabulary_path(workdir: str, config: dict) -> str:
  """The vocabulary WORKDIR's run reads, given its config.json's `config`.

  An imported model's W/tokenizer/ (whatever files it kept), else the vocabulary the config records
  (its copy in WORKDIR), else the one its config computes (a run from before the record; a
  UserError when that needs a corpus that is gone). Empty for a model imported without tokenizer files.
  """
  kept = os.path.join(os.path.expanduser(workdir), run_vocab.TOKENIZER_DIR_NAME)
  if os.path.isdir(kept):
    return kept
  recorded = run_vocab.resolve(workdir, config.get("vocab_path") or "")
  if recorded or config.get("hf_architecture"):
    return recorded
  return tasks.get(config).vocab_path(ml_collections.ConfigDict(config))  # a run from before the record
