"""Import a Hugging Face model into a tx_jax workdir: python -m tx_jax.import_hf --hf_dir=DIR --workdir=W

Supports GPT2LMHeadModel, LlamaForCausalLM, BertForMaskedLM, BertForSequenceClassification and
MarianMTModel directories (config.json + safetensors weights). Writes W/config.json, the weights
as W's step-0 checkpoint, and the model's tokenizer files in W/tokenizer/, which the config's
vocab_path then names: every entry point tokenizes with the model's own tokenizer.
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from tx_jax import command_line, defaults, errors, logging_utils
from tx_jax.data import hf_tokenizers
from tx_jax.interop import hf_config, hf_weights
from tx_jax.interop import workdir as workdir_lib
from tx_jax.training import run_vocab

FLAGS = flags.FLAGS

def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory (config.json + model.safetensors).")
  flags.DEFINE_string("workdir", None, "The tx_jax workdir to write (config.json, checkpoints/, tokenizer/).")
  flags.DEFINE_string("architecture", None, "The HF architecture, when config.json's 'architectures' is missing.")
  config_flags.DEFINE_config_file("config", None, "Optional training config whose non-model fields (optimizer, "
                                  "data, decoding) the workdir's config keeps, instead of tx_jax's defaults "
                                  "(tx_jax/defaults.py); the model fields come from the HF model.")


def read_hf_config(hf_dir: str) -> dict:
  """The config.json dict of a Hugging Face model directory."""
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    raise errors.DataError(f"{path} is missing: {hf_dir} is not a Hugging Face model directory.")
  with open(path) as f:
    return json.load(f)


# Lengths the model must hold (positions, KV cache): no longer than an imported model's max_len.
LENGTH_FIELDS = ("max_target_length", "max_eval_target_length", "max_predict_length")


def workdir_config(hf: dict, base_config=None, architecture=None) -> dict:
  """The flat config of an imported model: `base_config` (else every default) with the HF model's fields."""
  base = defaults.get_config() if base_config is None else base_config
  config = dict(base.to_dict() if hasattr(base, "to_dict") else base)
  imported = hf_config.from_hf(hf, architecture)
  run_vocab.check_special_ids(config, imported, "the imported model's tokenizer",
                              "to take the model's (its config.json names them).")
  config.update(imported)
  for field in LENGTH_FIELDS:
    if field in config:
      config[field] = min(config[field], config["max_len"])
  return json.loads(json.dumps(config))  # as config.json holds it (tuples as lists)


def import_dir(hf_dir: str, workdir: str, *, base_config=None, architecture=None) -> dict:
  """Converts the HF model in `hf_dir` into the tx_jax workdir `workdir`; returns the flat config written.

  base_config: a training config (dict or ConfigDict) the HF model fields are laid over; by default
  tx_jax's defaults (every field, so decoding and evaluation settings are there for every tool).
  """
  config = workdir_config(read_hf_config(hf_dir), base_config, architecture)
  params = hf_weights.to_tx_params(config, hf_weights.read_state_dict(hf_dir))
  workdir_lib.copy_tokenizer(hf_dir, os.path.join(workdir, "tokenizer"))
  if hf_tokenizers.is_tokenizer_dir(os.path.join(workdir, "tokenizer")):
    config["vocab_path"] = "tokenizer"  # the model's own tokenizer, relative to the workdir (which may move)
  workdir_lib.write_workdir(workdir, config, params)
  return config


def main(argv):
  """Imports the Hugging Face model in --hf_dir into --workdir."""
  del argv
  logging_utils.quiet_library_logs()
  if FLAGS.hf_dir is None or FLAGS.workdir is None:
    raise app.UsageError("--hf_dir and --workdir are required.")
  with command_line.one_line_errors("tx_jax.import_hf", writes_to=FLAGS.workdir):
    config = import_dir(FLAGS.hf_dir, FLAGS.workdir, base_config=FLAGS.config, architecture=FLAGS.architecture)
  print(f"Imported {config['hf_architecture']} ({config['model_family']}, task={config['task']}) into "
        f"{FLAGS.workdir}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.import_hf"))
