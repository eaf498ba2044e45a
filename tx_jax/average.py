"""Average the parameters of a run's newest checkpoints into a new workdir every entry point reads.

Usage: python -m tx_jax.average --workdir=W --last=N [--out=W_avgN]

The new workdir holds W's config.json, its vocabulary and one checkpoint, at the newest averaged step, whose
parameters are the mean of the last N checkpoints' (optimizer state and RNG of the newest one);
`tx_jax.evaluate`, `translate`, `generate` and `visualize` read it as they read W. In a run that
keeps an EMA (config.ema_decay > 0), which those tools read by default, the newest step's EMA is
replaced by the same mean, so every tool reads the average, with or without --use_ema.
`tx_jax.evaluate --average_last=N` scores such an average without writing it.
"""

import json
import os
import shutil

import jax
from absl import app, flags, logging

from tx_jax import command_line, errors, logging_utils, parallel
from tx_jax.training import averaging, checkpoint, ema, experiment, run_vocab

FLAGS = flags.FLAGS
AVERAGE_FILE = "average.json"  # in the new workdir: which run and steps it averages


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  flags.DEFINE_string("workdir", None, "The tx_jax.train workdir whose checkpoints are averaged.")
  flags.DEFINE_integer("last", 5, "How many of the newest checkpoints to average.")
  flags.DEFINE_string("out", None, "The new workdir; default: WORKDIR_avgN beside WORKDIR.")


def average_workdir(workdir: str, last: int, out: str | None = None) -> dict:
  """Writes the average of `workdir`'s newest `last` checkpoints as the workdir `out`; returns what it wrote."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  out = os.path.abspath(os.path.expanduser(out or f"{workdir.rstrip('/')}_avg{last}"))
  if out == workdir:
    raise errors.ConfigError("--out must differ from --workdir (the average goes into a new workdir).")
  if os.path.exists(os.path.join(out, "checkpoints")):
    raise errors.ConfigError(f"{out} already holds checkpoints; pass another --out or delete it first.")
  config = experiment.workdir_config(workdir)
  source = checkpoint.make_manager(workdir, read_only=True)
  steps = averaging.last_steps(source, last)
  mesh = parallel.make_mesh((-1, 1, 1))
  _, abstract_state, _, _ = experiment.build(config, mesh, abstract_only=True)
  newest, _ = checkpoint.restore(source, abstract_state, steps[-1])  # its optimizer state, step and RNG
  mean = averaging.average_params(workdir, abstract_state.params, steps)
  state = newest.replace(params=mean, opt_state=ema.with_average(newest.opt_state, mean))
  if jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(os.path.join(workdir, "config.json"), os.path.join(out, "config.json"))
    run_vocab.copy_kept(workdir, out)  # the vocabulary that config.json names
  target = checkpoint.make_manager(out, max_to_keep=1)
  checkpoint.save(target, steps[-1], state)  # no data position: a run continued from it starts its data anew
  target.wait_until_finished()
  target.close()
  record = {"source": workdir, "steps": steps, "out": out,
            "ema_replaced_by_the_average": ema.find(newest.opt_state) is not None}
  if jax.process_index() == 0:
    with open(os.path.join(out, AVERAGE_FILE), "w") as f:
      json.dump(record, f, indent=2)
  logging.info("Averaged steps %s of %s into %s", steps, workdir, out)
  return record


def main(argv):
  """Averages the parameters of --workdir's newest --last checkpoints into --out."""
  del argv
  logging_utils.quiet_library_logs()
  if FLAGS.workdir is None:
    raise app.UsageError("--workdir is required.")
  out = FLAGS.out or os.path.dirname(os.path.abspath(FLAGS.workdir))  # the average goes beside the workdir
  with command_line.one_line_errors("tx_jax.average", writes_to=out):
    record = average_workdir(FLAGS.workdir, FLAGS.last, FLAGS.out)
  print(f"averaged steps {', '.join(map(str, record['steps']))} of {record['source']} into {record['out']}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.average"))
