"""Attention heatmaps of a trained workdir: python -m tx_jax.visualize --workdir=DIR --text="..." --out=attn.png

Draws one kind of attention (--kind) as a grid of layers (rows) x heads (columns) of query x key
heatmaps, labelled with the SentencePiece pieces; --kind=all writes OUT_<kind>.png for every kind.
"""

import os

from absl import app, flags

from tx_jax import command_line, errors, logging_utils, tasks
from tx_jax.inference import attention_maps, attention_plots, restore
from tx_jax.training import experiment

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  flags.DEFINE_string("workdir", None, "A tx_jax.train workdir (config.json + checkpoints/).")
  flags.DEFINE_string("text", None, "The sentence to run the model on (the source, for translation models).")
  flags.DEFINE_string("out", None, "Image file to write (.png; .pdf and .svg work too).")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
  flags.DEFINE_bool("use_ema", True, "Use the run's parameter EMA when it keeps one (config.ema_decay > 0).")
  flags.DEFINE_string("target", None, "Encoder-decoder models: the target sentence; default: the model's own "
                      "greedy translation.")
  flags.DEFINE_string("kind", None, "Which attention: encoder_self, decoder_self or cross (encoder-decoder), "
                      "self (decoder-only, encoder-only), or all; default: cross, or self.")


def render(workdir: str, text: str, out: str, *, step=None, target=None, kind=None, use_ema=True) -> list:
  """Writes the heatmaps of `kind` (or every kind, for 'all') of the checkpoint in `workdir`; returns the paths."""
  config = experiment.workdir_config(workdir)
  kinds = attention_maps.family_kinds(config)
  kind = kind or attention_plots.default_kind(config)
  if kind not in kinds + ("all",):
    raise errors.UserError(f"--kind={kind} is not one of {kinds + ('all',)} (the kinds of a "
                           f"{tasks.get(config).family} model).")
  config, graphdef, params, processor = restore.restore_for_inference(workdir, step, use_ema)
  maps = attention_maps.attention_weights(graphdef, params, config, processor, text, target)
  root, ext = os.path.splitext(os.path.expanduser(out))  # ~ after --out= is not expanded by the shell
  paths = []
  for k in (kinds if kind == "all" else (kind,)):
    path = f"{root}_{k}{ext or '.png'}" if kind == "all" else root + ext
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    attention_plots.plot_map(k, maps[k]).savefig(path, dpi=attention_plots.DPI)
    paths.append(path)
  return paths


def main(argv):
  """Writes attention heatmaps of --text under --workdir's model to --out."""
  del argv
  logging_utils.quiet_library_logs()
  if FLAGS.workdir is None or FLAGS.text is None or FLAGS.out is None:
    raise app.UsageError("--workdir, --text and --out are required.")
  with command_line.one_line_errors("tx_jax.visualize", writes_to=FLAGS.out):
    paths = render(FLAGS.workdir, FLAGS.text, FLAGS.out, step=FLAGS.step, target=FLAGS.target, kind=FLAGS.kind,
                   use_ema=FLAGS.use_ema)
  print("\n".join(paths))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.visualize"))
