"""Evaluate a checkpoint: loss, token accuracy, perplexity, and SacreBLEU (translation) or the unigram baseline (LM).

Usage: python -m tx_jax.evaluate --config=configs/default.py --workdir=DIR [--step=N] [--split=test]
"""

import json
import os
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tx_jax import configuration, errors, logging_utils, parallel
from tx_jax.data import task_data
from tx_jax.training import checkpoint, evaluation, experiment

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  config_flags.DEFINE_config_file("config", None, "Training config file (the one used to train).")
  flags.DEFINE_string("workdir", None, "Directory with the checkpoints of a training run.")
  flags.DEFINE_integer("step", None, "Checkpoint step to evaluate; default: the newest.")
  flags.DEFINE_enum("split", "test", ["validation", "test"], "Split to evaluate on.")
  flags.DEFINE_integer("max_sentences", 0, "Decode only the first N sentences (0: all).")


def evaluate(config, workdir: str, step: int | None = None, split: str = "test", max_sentences: int = 0) -> dict:
  """Restores a checkpoint and reports on `split`: loss, accuracy, perplexity, and BLEU or the unigram baseline.

  Translation writes the translations; every task writes WORKDIR/eval/<split>_step<N>.json.
  """
  configuration.validate(config)
  is_lm = config.get("task", "translation") == "lm"
  mesh = parallel.make_mesh(config.mesh_shape)
  data = task_data.load(config, splits=("train", split) if is_lm else (split,))
  graphdef, abstract_state, _, eval_fn = experiment.build(config, mesh, abstract_only=True)
  manager = checkpoint.make_manager(workdir, read_only=True)
  state, _ = checkpoint.restore(manager, abstract_state, step)
  step = int(jax.device_get(state.step))
  results = evaluation.loss_metrics(eval_fn, state.params, data.eval[split], config, mesh, prefix=split)
  summary = {"step": step, "split": split, "metrics": results}
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  if is_lm:
    results[f"{split}/unigram_perplexity"] = evaluation.unigram_perplexity(
      data.train, data.eval[split], config.vocab_size)
  else:
    pairs = data.pairs[split][:max_sentences] if max_sentences else data.pairs[split]
    start = time.time()
    result, signature, hypotheses = evaluation.bleu(graphdef, state.params, data.processor, pairs, config, mesh)
    results.update({f"{split}/bleu": result.score, f"{split}/sentences": len(pairs),
                    f"{split}/decode_seconds": time.time() - start})
    translations = os.path.join(out_dir, f"{split}_step{step}.{config.target_language}")
    with open(translations, "w", encoding="utf-8") as f:
      f.writelines(h + "\n" for h in hypotheses)
    summary.update({"bleu": result.score, "bleu_signature": signature, "bleu_details": str(result),
                    "translations": translations})
  with open(os.path.join(out_dir, f"{split}_step{step}.json"), "w") as f:
    json.dump(summary, f, indent=2)
  logging.info("%s", summary)
  return summary


def main(argv):
  logging_utils.quiet_library_logs()
  del argv
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required.")
  try:
    s = evaluate(FLAGS.config, FLAGS.workdir, FLAGS.step, FLAGS.split, FLAGS.max_sentences)
  except errors.UserError as e:
    sys.exit(f"tx_jax.evaluate: {e}")
  m = s["metrics"]
  print(f"step {s['step']} {s['split']}: loss {m[s['split'] + '/loss']:.4f}  "
        f"accuracy {m[s['split'] + '/accuracy']:.4f}  perplexity {m[s['split'] + '/perplexity']:.2f}")
  if "bleu" in s:
    print(f"SacreBLEU {s['bleu']:.2f}  ({s['bleu_details']})")
    print(f"signature: {s['bleu_signature']}")
    print(f"translations: {s['translations']}")
  else:
    print(f"unigram perplexity of the same tokens (baseline): {m[s['split'] + '/unigram_perplexity']:.2f}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
