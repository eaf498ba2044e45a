"""Evaluate a checkpoint of any task on a split, beside the baseline it must beat.

- translation: SacreBLEU BLEU, chrF and TER of beam-search translations, each with its signature and
  95 % bootstrap confidence interval (tx_jax.inference.scores);
- lm: perplexity and bits per byte, beside a unigram model's perplexity;
- mlm: masked-token accuracy and perplexity, beside the most frequent token's accuracy and a unigram's perplexity;
- classification: accuracy and macro-F1, beside always answering the majority class.

Usage: python -m tx_jax.evaluate --config=configs/default.py --workdir=DIR [--step=N | --average_last=K] [--split=test]
Results go to WORKDIR/eval/<split>_step<N>[_avg<K>].json and to TensorBoard as eval/<split>/... at step N.
Restores onto whatever devices this process has, however many the training used.
"""

import json
import math
import os
import sys
import time

from tx_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_tuned_malloc()  # first, before jax allocates anything (see tx_jax/host_memory.py)

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tx_jax import command_line, configuration, errors, logging_utils, parallel, python_gc, tasks
from tx_jax.inference import restore
from tx_jax.training import averaging, best, checkpoint, evaluation, experiment, metrics

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  config_flags.DEFINE_config_file("config", None, "Optional: evaluation settings (beam_size, ...) over the run's own "
                                  "WORKDIR/config.json; --config.<field>=... overrides any field.")
  flags.DEFINE_multi_string("workdir", None, "Directory with the checkpoints of a training run; several "
                            "(repeated or comma-separated): their ensemble's translations are scored.")
  flags.DEFINE_string("step", None, "Checkpoint step to evaluate, or 'best' (the best by the run's "
                      "config.best_metric); default: the newest.")
  flags.DEFINE_enum("split", "test", ["validation", "test"], "Split to evaluate on.")
  flags.DEFINE_integer("max_sentences", 0, "Decode only the first N sentences (0: all); their scores go to files "
                       "named ..._first<N> (one workdir's scalars to eval/..._first<N>/), beside the whole split's.")
  flags.DEFINE_bool("use_ema", True, "Evaluate the run's parameter EMA when it keeps one (config.ema_decay > 0); "
                    "--nouse_ema: the raw parameters.")
  flags.DEFINE_list("beam_sizes", [], "A decoding sweep: decode --split (default then: validation) with every "
                    "beam size here and every --length_penalties value, and print one table.")
  flags.DEFINE_list("length_penalties", [], "Length penalty alphas of the sweep (default: the run's).")
  flags.DEFINE_integer("average_last", 0, "Evaluate the mean of the parameters of the newest N checkpoints "
                       "(0: one checkpoint); python -m tx_jax.average writes such an average as a workdir.")


def evaluate(config, workdir: str, step: int | None = None, split: str = "test", max_sentences: int = 0,
             average_last: int = 0, use_ema: bool = True) -> dict:
  """Restores a checkpoint (or averages the newest `average_last`) and reports the task's metrics on `split`."""
  configuration.validate(config)
  task = tasks.get(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  mesh = parallel.make_mesh(config.mesh_shape)
  manager = checkpoint.make_manager(workdir, read_only=True, best_metric=config.get("best_metric", ""),
                                    best_mode=best.mode(config) if config.get("best_metric") else "max")
  checkpoint.require_step(manager)  # a workdir without checkpoints is the error to name, before its vocabulary
  tokenizer = task.tokenizer(config, scoring=True)  # never trained here: a missing vocabulary is an error
  task.check_evaluable(config, tokenizer, split)
  graphdef, abstract_state, _, eval_fn = experiment.build(config, mesh, abstract_only=True)
  step = checkpoint_step(manager, config, step)
  if average_last:
    if step is not None:
      raise errors.ConfigError("--step and --average_last exclude each other (an average is of the newest steps).")
    averaged = averaging.last_steps(manager, average_last)
    params, step = averaging.average_params(workdir, abstract_state.params, averaged), averaged[-1]  # raw params
  elif use_ema and config.get("ema_decay", 0.0) > 0:  # the average alone, out of the optimizer-state item
    params, step = checkpoint.restore_ema(workdir, abstract_state, step)
  else:  # the parameters alone: no Adam moment is read
    params, step = checkpoint.restore_params(workdir, abstract_state.params, step)
  with_ema = not average_last and use_ema and config.get("ema_decay", 0.0) > 0
  raw_of_ema_run = not average_last and not with_ema and config.get("ema_decay", 0.0) > 0
  variant = _joined(f"avg{average_last}" if average_last else "raw" if raw_of_ema_run else "",
                    other_dtype(config, workdir),
                    first_part(config, split, max_sentences))  # e.g. avg5, raw_bfloat16: files and scalars of their own
  name = _joined(f"{split}_step{step}", variant)  # of the results files
  results = evaluation.loss_metrics(eval_fn, params, task, tokenizer, split, config, mesh, prefix=split,
                                    max_batches=-1)
  summary = {"step": step, "split": split, "task": task.name, "metrics": results, "ema": with_ema,
             "dtype": config.dtype}
  if average_last:
    summary["averaged_steps"] = averaged
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  results.update(task.baselines(config, tokenizer, split, results))
  if tasks.is_translation(config):
    pairs = task.pairs(config, split, max_sentences)
    start = time.time()
    scores, hypotheses = evaluation.translation_scores(graphdef, params, tokenizer, pairs, config, mesh,
                                                       confidence=True)
    results.update({f"{split}/{m.lower()}": scores[m]["score"] for m in scores})  # test/bleu, test/chrf, test/ter
    results.update({f"{split}/sentences": len(pairs), f"{split}/decode_seconds": time.time() - start})
    translations = os.path.join(out_dir, f"{name}.{config.target_language}")
    if jax.process_index() == 0:
      with open(translations, "w", encoding="utf-8") as f:
        f.writelines(h + "\n" for h in hypotheses)
    summary.update({"bleu": scores["BLEU"]["score"], "scores": scores, "translations": translations})
  if jax.process_index() == 0:
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
      json.dump(summary, f, indent=2)
  writer = metrics.MetricWriter(workdir)
  tag = f"eval/{variant}/" if variant else "eval/"  # an average, an EMA run's raw params, another dtype
  writer.scalars(step, {tag + k: v for k, v in results.items() if math.isfinite(v)})
  writer.close()
  logging.info("%s", summary)
  return summary


def _joined(*parts) -> str:
  """The non-empty parts joined by "_": the name of a results file or of a group of scalars."""
  return "_".join(p for p in parts if p)


def first_part(config, split: str, max_sentences: int) -> str:
  """"first<N>" when only the first N sentences of `split` are decoded, else "": partial scores are kept apart.

  A quick --max_sentences decode must never replace the whole split's files and scalars.
  """
  partial = tasks.is_translation(config) and 0 < max_sentences < len(tasks.get(config).records(config, split))
  return f"first{max_sentences}" if partial else ""


def other_dtype(config, workdir: str) -> str:
  """config.dtype when it is not the one the run in `workdir` trained with (its results are kept apart), else ""."""
  return config.dtype if config.dtype != experiment.workdir_config(workdir).get("dtype", "float32") else ""


def checkpoint_step(manager, config, step) -> int | None:
  """`step` as a number: None (the newest), an int or its digits, or "best" (by the run's config.best_metric)."""
  if step is None or isinstance(step, int):
    return step
  if str(step).isdigit():
    return int(step)
  if step != "best":
    raise errors.ConfigError(f"--step={step} is neither a step number nor 'best'.")
  if not config.get("best_metric"):
    raise errors.ConfigError("--step=best needs a run trained with config.best_metric (e.g. \"eval/bleu\"); this "
                             "one kept no metrics. Pass a step number.")
  found = manager.best_step()
  if found is None:
    raise errors.CheckpointError(f"No checkpoint in {manager.directory} carries {config.best_metric} yet.")
  logging.info("The best checkpoint by %s is step %d.", config.best_metric, found)
  return found


def evaluate_ensemble(config, workdirs, split: str = "test", max_sentences: int = 0, use_ema: bool = True) -> dict:
  """SacreBLEU scores of the ensemble of several translation workdirs' newest checkpoints on `split`.

  The models decode together (tx_jax.inference.decode.ensemble_step); losses are per model, so an ensemble
  is scored by its translations only. Results go to the first workdir's eval/ directory.
  """
  configuration.validate(config)
  if not tasks.is_translation(config):
    raise errors.ConfigError(f"Ensembles decode translations; {workdirs[0]} holds a config.task={config.task!r} "
                             "model. Evaluate its workdirs one at a time.")
  workdirs = [os.path.abspath(os.path.expanduser(w)) for w in workdirs]
  _, graphdefs, params, tokenizer = restore.restore_ensemble(workdirs, None, use_ema, config.dtype)
  task = tasks.get(config)
  pairs = task.pairs(config, split, max_sentences)
  start = time.time()
  scores, hypotheses = evaluation.translation_scores(graphdefs, params, tokenizer, pairs, config, None,
                                                     confidence=True)
  out_dir = os.path.join(workdirs[0], "eval")
  os.makedirs(out_dir, exist_ok=True)
  name = _joined(f"{split}_ensemble{len(workdirs)}", other_dtype(config, workdirs[0]),
                 first_part(config, split, max_sentences))
  translations = os.path.join(out_dir, f"{name}.{config.target_language}")
  summary = {"split": split, "task": task.name, "ensemble": workdirs, "bleu": scores["BLEU"]["score"],
             "scores": scores, "translations": translations, "sentences": len(pairs),
             "decode_seconds": time.time() - start, "dtype": config.dtype}
  if jax.process_index() == 0:
    with open(translations, "w", encoding="utf-8") as f:
      f.writelines(h + "\n" for h in hypotheses)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary


def decoding_sweep(config, workdir: str, beam_sizes, alphas, *, split: str = "validation", step=None,
                   max_sentences: int = 0, use_ema: bool = True) -> dict:
  """BLEU, chrF, TER and length ratio of the checkpoint's translations of `split` at every beam size x alpha.

  Pick decoding settings on validation, not test. Writes WORKDIR/eval/sweep_<split>_step<N>.{json,md} (..._first<K>
  with max_sentences=K).
  """
  configuration.validate(config)
  if not tasks.is_translation(config):
    raise errors.ConfigError(f"A decoding sweep needs a translation model; {workdir} holds config.task="
                             f"{config.task!r}.")
  beam_sizes, alphas = [_number(b, int, "--beam_sizes") for b in beam_sizes], [
    _number(a, float, "--length_penalties") for a in alphas or [config.length_penalty_alpha]]
  workdir = os.path.abspath(os.path.expanduser(workdir))
  manager = checkpoint.make_manager(workdir, read_only=True, best_metric=config.get("best_metric", ""),
                                    best_mode=best.mode(config) if config.get("best_metric") else "max")
  step = checkpoint_step(manager, config, step)
  step = manager.latest_step() if step is None else step
  _, graphdef, params, tokenizer = restore.restore_for_inference(workdir, step, use_ema, config.dtype)
  pairs = tasks.get(config).pairs(config, split, max_sentences)
  rows = []
  for beam in beam_sizes:
    for alpha in alphas:
      setting = config.copy_and_resolve_references()
      setting.beam_size, setting.length_penalty_alpha = beam, alpha
      start = time.time()
      scores, _ = evaluation.translation_scores(graphdef, params, tokenizer, pairs, setting, None)
      rows.append({"beam_size": beam, "length_penalty": alpha, "bleu": scores["BLEU"]["score"],
                   "chrf": scores["chrF"]["score"], "ter": scores["TER"]["score"],
                   "length_ratio": scores["BLEU"]["length_ratio"], "seconds": time.time() - start})
      logging.info("beam %d, alpha %.2f: BLEU %.2f", beam, alpha, rows[-1]["bleu"])
  best_row = max(rows, key=lambda r: r["bleu"])
  summary = {"split": split, "step": step, "sentences": len(pairs), "rows": rows, "best": best_row,
             "signature": scores["BLEU"]["signature"], "dtype": config.dtype}
  table = sweep_table(summary)
  if jax.process_index() == 0:
    out = os.path.join(workdir, "eval", _joined(f"sweep_{split}_step{step}", other_dtype(config, workdir),
                                                first_part(config, split, max_sentences)))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json", "w") as f:
      json.dump(summary, f, indent=2)
    with open(out + ".md", "w") as f:
      f.write(table + "\n")
    summary["files"] = [out + ".json", out + ".md"]
  return summary


def _number(text, kind, flag):
  """`text` of a list flag as an int or float; ConfigError naming the flag otherwise."""
  try:
    value = kind(text)
  except ValueError:
    raise errors.ConfigError(f"{flag} has {text!r}, not a number; pass e.g. {flag}=1,4,8.") from None
  if value < 0 or (kind is int and value == 0):
    raise errors.ConfigError(f"{flag} has {text!r}; beam sizes are positive and penalties non-negative.")
  return value


def sweep_table(summary: dict) -> str:
  """A decoding sweep as a Markdown table, the best BLEU marked."""
  lines = [f"Decoding sweep on {summary['split']} ({summary['sentences']} sentences), step {summary['step']}",
           "", "| beam | length penalty | BLEU | chrF | TER | length ratio | seconds |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in summary["rows"]:
    mark = " **best**" if r is summary["best"] else ""
    lines.append(f"| {r['beam_size']} | {r['length_penalty']:g} | {r['bleu']:.2f}{mark} | {r['chrf']:.2f} | "
                 f"{r['ter']:.2f} | {r['length_ratio']:.3f} | {r['seconds']:.1f} |")
  return "\n".join(lines + ["", f"BLEU signature: {summary['signature']}"])


def report(s: dict) -> str:
  """The human-readable lines `python -m tx_jax.evaluate` prints for a summary."""
  if "ensemble" in s:
    lines = [f"ensemble of {len(s['ensemble'])} ({', '.join(s['ensemble'])}) on {s['split']}:"]
  else:
    m, p = s["metrics"], s["split"] + "/"
    lines = [f"step {s['step']} {s['split']} ({s['task']}): loss {m[p + 'loss']:.4f}  "
             f"accuracy {m[p + 'accuracy']:.4f}"]
  return "\n".join(lines + tasks.get(s["task"]).report(s))


def main(argv):
  """Evaluates the flagged workdir(s) on --split and prints the report beside its baselines."""
  logging_utils.quiet_library_logs()
  del argv
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  python_gc.freeze()  # the imports: the collector's passes while restoring and decoding skip them
  workdirs = command_line.split_list(FLAGS.workdir)
  overridden = [arg.split("=", 1)[0][len("--config."):] for arg in sys.argv if arg.startswith("--config.")]
  with command_line.one_line_errors("tx_jax.evaluate", writes_to=workdirs[0]):
    config = experiment.evaluation_config(workdirs[0], FLAGS.config, overridden)
    if FLAGS.beam_sizes or FLAGS.length_penalties:
      split = FLAGS.split if FLAGS["split"].present else "validation"
      summary = decoding_sweep(config, workdirs[0], FLAGS.beam_sizes or [config.beam_size], FLAGS.length_penalties,
                               split=split, step=FLAGS.step, max_sentences=FLAGS.max_sentences, use_ema=FLAGS.use_ema)
      print(sweep_table(summary))
      return
    if len(workdirs) > 1:
      if FLAGS.step is not None or FLAGS.average_last:
        raise errors.ConfigError("--step and --average_last pick checkpoints of one workdir; an ensemble uses "
                                 "each workdir's newest.")
      summary = evaluate_ensemble(config, workdirs, FLAGS.split, FLAGS.max_sentences, FLAGS.use_ema)
    else:
      summary = evaluate(config, workdirs[0], FLAGS.step, FLAGS.split, FLAGS.max_sentences, FLAGS.average_last,
                         FLAGS.use_ema)
  print(report(summary))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.evaluate"))
