"""Export a tx_jax workdir as a Hugging Face model: python -m tx_jax.export_hf --workdir=W --out=DIR

Writes DIR/config.json and DIR/model.safetensors (transformers loads them with from_pretrained)
and the run's tokenizer beside them: an imported model's W/tokenizer/ as it came, tx_jax's own
SentencePiece vocabulary as a tokenizer.json that adds the specials the model reads. A model whose
switches have no Hugging Face counterpart stops with an error naming the switch.
"""

import os

from absl import app, flags, logging

from tx_jax import command_line, errors, logging_utils, tasks
from tx_jax.interop import export, hf_tokenizer
from tx_jax.interop import workdir as workdir_lib

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  flags.DEFINE_string("workdir", None, "A tx_jax workdir (config.json + checkpoints/).")
  flags.DEFINE_string("out", None, "The Hugging Face directory to write.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
  flags.DEFINE_bool("use_ema", True, "Export the run's parameter EMA when it keeps one (config.ema_decay > 0), "
                    "the model evaluate and translate score; --nouse_ema: the raw parameters.")


def export_workdir(workdir: str, out_dir: str, step: int | None = None, use_ema: bool = True) -> str:
  """Exports the checkpoint of `workdir` (its EMA when it keeps one and `use_ema`) to the HF directory `out_dir`.

  Returns the architecture written.
  """
  config, params = workdir_lib.read_workdir(workdir, step, use_ema)
  try:
    vocabulary = workdir_lib.vocabulary_path(workdir, config)
  except errors.UserError as e:  # a run from before the record, its vocabulary named by a corpus that is gone
    vocabulary, missing = "", f"its vocabulary cannot be found ({e})"
  else:
    missing = f"its vocabulary {vocabulary} is missing." if vocabulary else "it was imported without one."
  own = None
  if os.path.isfile(vocabulary):  # tx_jax's SentencePiece model: the HF config names its tokenizer's special ids
    own = hf_tokenizer.for_task(vocabulary, tasks.get(config), max_length=config.get("max_len", 512))
    config = {**hf_tokenizer.OWN_VOCABULARY_IDS, **config}
  architecture = export.export_dir(config, params, out_dir)
  if own:
    hf_tokenizer.save(*own, out_dir)
  elif not (os.path.isdir(vocabulary) and workdir_lib.copy_tokenizer(vocabulary, out_dir)):
    logging.warning("Exported %s without a tokenizer: %s", workdir,
                    f"{vocabulary} holds no tokenizer files." if os.path.isdir(vocabulary) else missing)
  return architecture


def main(argv):
  """Exports --workdir to --out as a Hugging Face model directory."""
  del argv
  logging_utils.quiet_library_logs()
  if FLAGS.workdir is None or FLAGS.out is None:
    raise app.UsageError("--workdir and --out are required.")
  with command_line.one_line_errors("tx_jax.export_hf", writes_to=FLAGS.out):
    architecture = export_workdir(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.use_ema)
  print(f"Exported {FLAGS.workdir} as {architecture} to {FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.export_hf"))
