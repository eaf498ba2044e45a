"""Translate text with a trained workdir: python -m tx_jax.translate --workdir=DIR < in.txt > out.txt

Reads one sentence per line from stdin and writes one translation per line to stdout.
"""

import sys

from tx_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_tuned_malloc()  # first, before jax allocates anything (see tx_jax/host_memory.py)

from absl import app, flags, logging

from tx_jax import command_line, configuration, errors, logging_utils, python_gc, tasks
from tx_jax.inference import decode, restore

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  flags.DEFINE_multi_string("workdir", None, "A tx_jax.train workdir (config.json + checkpoints/); several "
                            "(repeated or comma-separated) translate as an ensemble.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
  flags.DEFINE_bool("use_ema", True, "Use the run's parameter EMA when it keeps one (config.ema_decay > 0).")
  flags.DEFINE_integer("beam_size", None, "Beam size; default: the run's config.beam_size (1 = greedy).")
  flags.DEFINE_integer("batch_size", 64, "Sentences decoded together.")
  flags.DEFINE_enum("dtype", None, list(configuration.CHOICES["dtype"]), "Compute dtype to decode in; default: "
                    "the run's config.dtype. bfloat16 pays on CPUs with AVX-512 BF16 or AMX (experiments/README.md).")


def translate_lines(workdir, lines, *, step=None, beam_size=None, batch_size: int = 64, use_ema: bool = True,
                    dtype=None):
  """Translations of `lines` (a list of strings) by the checkpoint in `workdir` (or the ensemble of a list of them)."""
  for name, value in (("batch_size", batch_size), ("beam_size", beam_size)):
    if value is not None and value < 1:  # -1 gave every line an empty translation; 0, the run's beam silently
      raise errors.ConfigError(f"--{name}={value} must be at least 1.")
  workdirs = [workdir] if isinstance(workdir, str) else list(workdir)
  config, graphdef, params, processor = restore.restore_ensemble(workdirs, step, use_ema, dtype)
  if not tasks.is_translation(config):
    raise errors.ConfigError(f"{workdirs[0]} holds a config.task={config.task!r} model; tx_jax.translate needs a "
                             "translation model (use tx_jax.generate for language models).")
  out = [""] * len(lines)
  texts = [(i, line) for i, line in enumerate(lines) if line.strip()]
  translated = decode.translate_texts(
    graphdef, params, processor, [t for _, t in texts], batch_size=batch_size,
    beam_size=beam_size or config.beam_size, alpha=config.length_penalty_alpha,
    max_predict_length=config.max_predict_length, max_source_length=config.max_eval_target_length)
  for (i, _), t in zip(texts, translated):
    out[i] = t
  return out


def read_lines(stream) -> list:
  """The lines of a byte stream as text: invalid UTF-8 replaced (and counted in a warning), line ends dropped."""
  lines, replaced = [], 0
  for raw in stream:
    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    replaced += "\ufffd" in line and "\ufffd".encode() not in raw
    lines.append(line)
  if replaced:
    logging.warning("Replaced invalid UTF-8 in %d of %d input lines with U+FFFD.", replaced, len(lines))
  return lines


def main(argv):
  """Translates stdin line by line with --workdir's model (or an ensemble) to stdout."""
  del argv
  logging_utils.quiet_library_logs()
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  python_gc.freeze()  # the imports: the collector's passes while restoring and decoding skip them
  lines = read_lines(sys.stdin.buffer)
  with command_line.one_line_errors("tx_jax.translate"):
    translations = translate_lines(command_line.split_list(FLAGS.workdir), lines, step=FLAGS.step, beam_size=FLAGS.beam_size,
                                   batch_size=FLAGS.batch_size, use_ema=FLAGS.use_ema, dtype=FLAGS.dtype)
  sys.stdout.writelines(t + "\n" for t in translations)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.translate"))
