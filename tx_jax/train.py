"""Train a Transformer (translation, LM, masked LM or classifier): python -m tx_jax.train --config=configs/default.py --workdir=DIR.

Resumes from the newest checkpoint in WORKDIR; `--config.key=value` overrides any config field.
"""

import contextlib
import json
import os
import sys
import tempfile
import threading
import time

from tx_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_tuned_malloc()  # first, before jax allocates anything (see tx_jax/host_memory.py)

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from tx_jax import command_line, configuration, errors, logging_utils, parallel, python_gc, tasks, xla_options
from tx_jax.data import pipeline
from tx_jax.data import sources
from tx_jax.models import registry
from tx_jax.training import best, budget, checkpoint, divergence, ema, evaluation, experiment, init_from, loop, metrics
from tx_jax.training import perf, preemption, profiling, run_vocab, workdir_lock

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard logs and outputs.")
  # Multi-process runs (README "Accelerators and clusters"); default: TX_JAX_* environment variables.
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (else $TX_JAX_COORDINATOR).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (else $TX_JAX_NUM_PROCESSES).")
  flags.DEFINE_integer("process_id", None, "This process, 0..num_processes-1 (else $TX_JAX_PROCESS_ID).")
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() to let JAX detect the cluster "
                    "(needed on multi-host Cloud TPU slices; SLURM and TX_JAX_* are detected anyway).")


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from WORKDIR's newest checkpoint), evaluating and checkpointing periodically.

  SIGTERM or SIGINT stops it after the current step with a checkpoint there (summary
  "stopped_at_step"); a non-finite loss stops it with divergence.TrainingDiverged, saving nothing;
  with config.early_stopping_patience, it stops once the best_metric stops improving ("early_stopped_at_step").
  """
  configuration.validate(config)
  workdir = writable_workdir(workdir)
  lock = workdir_lock.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock, preemption.PreemptionWatch() as watch, python_gc.thawed_at_exit():
    return _train(config, workdir, watch)


def writable_workdir(workdir: str) -> str:
  """The absolute workdir, created and checked writable (one message naming it otherwise)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    tempfile.TemporaryFile(dir=workdir).close()
  except OSError as e:
    raise errors.ConfigError(f"--workdir={workdir} cannot be written ({e.strerror}); pass a directory you can "
                             "create and write.") from None
  return workdir


def _train(config, workdir: str, watch: preemption.PreemptionWatch) -> dict:
  """The training loop of train_and_evaluate in a locked, writable workdir."""
  manager = checkpoint.make_manager(workdir, preservation_policy=best.preservation_policy(config),
                                    best_metric=config.best_metric,
                                    best_mode=best.mode(config) if config.best_metric else "max")
  resuming = bool(manager.all_steps())
  if resuming:
    config = run_vocab.with_recorded(config, workdir)  # the vocabulary the run trained with, as its config.json says
  config = init_from.with_source(config, run_workdir=workdir if resuming else None)
  if resuming:
    experiment.check_resumable(config, workdir)  # another model would not fit the run's checkpoints
  mesh = parallel.make_mesh(config.mesh_shape)
  global_rows = parallel.global_rows(config)
  task = tasks.get(config)
  tokenizer = task.tokenizer(config, train=True, resumed_in=workdir if resuming else None)
  stats = write_data_stats(config, task, workdir)  # prepares the corpus: its errors come before any compile
  task.check_evaluable(config, tokenizer, "validation")

  python_gc.freeze()  # the imports and the corpus's set-up: tracing the steps then runs short collections
  # The train step compiles beside init, unless the newest checkpoint says the run has no step left to train.
  graphdef, state, train_fn, eval_fn = experiment.build(config, mesh, compile_ahead=_may_train_on(config, manager))
  logging.info("Model: %s parameters", f"{registry.count_params(state.params):,}")
  logging.info("Host malloc: %s", host_memory.describe())  # after the config's checks: their errors stay one line
  logging.info("XLA compile options: %s", xla_options.describe(config.parallelism))
  data_state = None
  if manager.all_steps():  # the newest readable checkpoint; unreadable newer ones are set aside, not deleted
    state, data_state = checkpoint.restore(manager, state, set_aside=True)
  elif config.get("init_from"):
    state = state.replace(params=init_from.load_matching_params(config.init_from, state.params))
  first_step = int(jax.device_get(state.step))
  last_saved = first_step if manager.all_steps() else None
  saved_loop = (checkpoint.loop_state(manager, first_step) if last_saved is not None else None) or {}
  tracker, clock = _loop_trackers(config, saved_loop)
  if tracker and tracker.should_stop():
    logging.warning("This run stopped early at step %d (%s has not improved on %s for %d evaluations); "
                    "raise --config.early_stopping_patience to train on.", first_step, tracker.metric,
                    tracker.best_text(), tracker.evals_since_best)
    return {"early_stopped_at_step": first_step, "best_step": tracker.best_step}
  if clock.over(config.train_minutes):
    logging.warning("This run has used its budget: %.1f of config.train_minutes=%g minutes at step %d; raise "
                    "--config.train_minutes to train on.", clock.train_seconds / 60, config.train_minutes, first_step)
    return {"budget_reached_at_step": first_step, **clock.state()}

  def loop_item() -> dict:
    """The loop state every checkpoint carries: the training clock and the keep-best tracker."""
    return {"clock": clock.state(), "best": tracker.state() if tracker else None}
  train_iter = task.train_batches(  # a resumed run keeps the logical data shards it started with
    config, tokenizer, global_rows=global_rows, process_index=jax.process_index(),
    process_count=jax.process_count(), data_shards=data_state and int(data_state["data_shards"]))
  if data_state is not None:
    train_iter.set_state(data_state)
  logging.info("Training data: %d records in %d data shard(s), batches of %d x %d tokens",
               stats["train"]["records"], train_iter.data_shards, global_rows, config.max_target_length)

  writer = metrics.MetricWriter(workdir)
  if first_step == 0 and jax.process_index() == 0:
    recorded = json.loads(config.to_json_best_effort())
    recorded["vocab_path"] = run_vocab.keep(task.vocab_path(config), workdir)  # its copy, WORKDIR/vocab.model
    writer.text(0, "config", "```\n" + json.dumps(recorded, indent=2) + "\n```")
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(recorded, f, indent=2)
  logging.info("Training steps %d..%d in %s", first_step, config.num_train_steps, workdir)

  peak_flops = None  # per device, for perf/mfu: known after the first step (on CPU it is measured, ~2 s)
  window, first_step_seconds, summary = loop.Window(), None, {}
  train_start, train_start_step = time.time(), first_step
  take_compile_seconds = getattr(train_fn, "take_compile_seconds", lambda: 0.0)  # padding_choice.ChosenOnHost's
  batch_log = open(os.path.join(workdir, f"batches_process{jax.process_index()}.jsonl"), "a", buffering=1) \
    if config.get("log_batches", False) else None
  profiler = profiling.StepProfiler(config.get("profile_steps"), workdir)

  def save(step: int, **kwargs):
    """Starts saving the state, the data position and the loop state at `step`."""
    nonlocal last_saved
    with window.paused():  # saving is not training throughput
      checkpoint.save(manager, step, state, train_iter, loop=loop_item(), **kwargs)
    last_saved = step

  def log_window(step: int):
    """Writes the window's means and rates to TensorBoard and one log line, then starts a new window."""
    if not window.sums:  # only the first step so far: it counts for neither throughput nor the means
      return
    window_summary = window.summary(jax.device_count(), peak_flops)
    writer.scalars(step, window_summary)
    summary.update(window_summary)
    rate = (step - train_start_step) / max(time.time() - train_start, 1e-9)
    eta = (config.num_train_steps - step) / max(rate, 1e-9)
    logging.info("step %d: loss %.4f  accuracy %.3f  lr %.2e  grad_norm %.2f  %.0f tokens/s  data wait %.1f ms/step"
                 "  step median %.1f ms, max %.1f ms  ETA %dm%02ds", step, summary["train/loss"],
                 summary["train/accuracy"], summary["train/learning_rate"], summary["train/grad_norm"],
                 summary["perf/tokens_per_sec"], 1e3 * summary["perf/data_wait_seconds"],
                 1e3 * float(np.median(window.step_times)), 1e3 * max(window.step_times), eta // 60, eta % 60)
    window.reset()

  @window.paused()  # evaluation is not training throughput (a context manager decorates as well)
  def evaluate_and_keep_best(step: int):
    """Validation loss metrics (and BLEU/chrF/TER for translation) to TensorBoard; with keep-best, a ranked save."""
    params = ema.inference_params(state)  # the EMA when the run keeps one: what evaluate and decoding use
    eval_summary = evaluation.loss_metrics(eval_fn, params, task, tokenizer, "validation", config, mesh)
    decodes = tasks.is_translation(config) and config.num_predict_sentences != 0  # 0: no BLEU during training
    pairs = task.pairs(config, "validation", max(config.num_predict_sentences, 0)) if decodes else []  # -1: all
    if pairs:
      scores, hyps = evaluation.translation_scores(graphdef, params, tokenizer, pairs, config, mesh)
      eval_summary.update({f"eval/{m.lower()}": scores[m]["score"] for m in scores})  # eval/bleu, chrf, ter
      writer.text(step, "eval/translations", "\n\n".join(
        f"{p[0]}  \n→ {h}  \n(ref: {p[1]})" for p, h in list(zip(pairs, hyps))[:5]))
    if config.get("attention_images", False):  # the first validation text's attention, as a picture
      from tx_jax.inference import attention_plots  # pylint: disable=import-outside-toplevel  (matplotlib: ~1 s to import)
      first = task.records(config, "validation")[0]
      writer.image(step, "eval/attention", attention_plots.attention_image(
        graphdef, params, config, tokenizer, first.get("source", first.get("text"))))
    writer.scalars(step, eval_summary)
    writer.flush()
    logging.info("eval at step %d: %s", step, {k: round(v, 4) for k, v in eval_summary.items()})
    summary.update(eval_summary)
    python_gc.freeze()  # what the evaluation traced and imported: later full passes skip it too
    if tracker:
      if tracker.metric not in eval_summary:
        save(step)  # the ConfigError below, naming the metrics there are, must not cost this step's checkpoint
      if tracker.update(step, eval_summary):
        logging.info("New best %s %.4f at step %d", tracker.metric, tracker.best_value, step)
      if tracker.best_value is not None:  # None while every evaluation gave a non-finite value
        writer.scalars(step, {"eval/best_" + tracker.metric.split("/", 1)[1]: tracker.best_value})
      # An evaluated step is always saved, carrying its metric, so keep-best can rank (and keep) it.
      save(step, metrics={tracker.metric: eval_summary[tracker.metric]})

  def save_unless_saved(step: int):
    """Saves at `step` unless the evaluation hook just did."""
    if last_saved != step:
      save(step)

  hooks = [loop.Hook(config.log_every_steps, log_window), loop.Hook(config.eval_every_steps, evaluate_and_keep_best),
           loop.Hook(config.checkpoint_every_steps, save_unless_saved)]
  try:
    for step in range(first_step + 1, config.num_train_steps + 1):
      step_start = time.time()
      local = next(train_iter)
      window.add_batch(pipeline.count_tokens(local) * jax.process_count(),  # processes read equal shares
                       perf.train_flops(config, local) * jax.process_count(), time.time() - step_start)
      t = time.time()
      profiler.before(step)
      state, step_sums = train_fn(state, parallel.global_batch(local, mesh))
      step_sums = jax.device_get(step_sums)
      compile_seconds = take_compile_seconds()  # a step config.token_capacity compiled for this batch's share
      profiler.after(step, state)
      divergence.check_finite(step, step_sums, config, last_saved)
      clock.add(time.time() - step_start, pipeline.count_target_tokens(local) * jax.process_count())
      out_of_budget = clock.over(config.train_minutes)
      final = step == config.num_train_steps or out_of_budget  # evaluated and saved like the last step
      if batch_log:  # what this process fed each step, to compare runs token for token, and the clock after it
        batch_log.write(json.dumps({"step": step, "sha1": pipeline.fingerprint(local),
                                    "train_seconds": round(clock.train_seconds, 6)}) + "\n")
      if first_step_seconds is None:  # the first step counts for neither throughput nor the logged means
        jax.block_until_ready(state.step)
        first_step_seconds = time.time() - t
        logging.info("First step took %.1fs (its compilation included, unless it compiled during init)",
                     first_step_seconds)
        writer.scalars(step, {"perf/first_step_seconds": first_step_seconds})
        logging.info("Froze %d objects alive after the first step out of the garbage collector's passes "
                     "(tx_jax/python_gc.py).", python_gc.freeze())
        peak_flops, peak_source = perf.peak_flops_per_device()  # after the first step: it need not delay it
        perf.log_peak(peak_flops, peak_source)
        window.reset()
        train_start, train_start_step = time.time(), step
      else:
        window.add_step(step_sums, time.time() - step_start, compile_seconds)
      loop.run_due(hooks, step, final)  # log line, evaluation (keep-best save), checkpoint
      if tracker and tracker.should_stop():
        logging.warning("Early stopping after step %d: %s has not improved on %s for %d evaluations.",
                        step, tracker.metric, tracker.best_text(), tracker.evals_since_best)
        summary.update(early_stopped_at_step=step, best_step=tracker.best_step)
        break
      if out_of_budget and step < config.num_train_steps:
        budget_summary = {"budget/train_minutes": config.train_minutes, "budget/steps": step,
                          "budget/train_seconds": clock.train_seconds, "budget/target_tokens": clock.target_tokens}
        writer.scalars(step, budget_summary)
        logging.warning("Budget reached after step %d: %.1f s of training (config.train_minutes=%g), %d target "
                        "tokens; evaluated and saved there.", step, clock.train_seconds, config.train_minutes,
                        clock.target_tokens)
        summary.update(budget_summary, budget_reached_at_step=step)
        break
      if watch.should_stop():  # SIGTERM / SIGINT on any process: the same step everywhere
        save_unless_saved(step)
        manager.wait_until_finished()
        logging.warning("Stopped by %s after step %d; its checkpoint is in %s. Run the same command to continue.",
                        watch.name, step, manager.directory)
        summary["stopped_at_step"] = step
        break
  finally:
    profiler.close()
    manager.wait_until_finished()
    writer.close()
    train_iter.close()
    if batch_log:
      batch_log.close()
  logging.info("Done. TensorBoard logs: %s  checkpoints: %s", os.path.join(workdir, "tensorboard"),
               manager.directory)
  return summary


def _loop_trackers(config, saved_loop: dict):
  """(keep-best tracker or None without config.best_metric, training clock) continuing a checkpoint's loop item."""
  tracker = best.Tracker.from_config(config, saved_loop.get("best")) if config.best_metric else None
  return tracker, budget.TrainClock.from_state(saved_loop.get("clock"))


def _may_train_on(config, manager) -> bool:
  """Whether the newest checkpoint leaves steps to train: not at num_train_steps, not early-stopped, within budget.

  It decides only whether the train step compiles ahead: should the newest checkpoint turn out
  unreadable (train then resumes from an older one), the cost of a wrong guess is the step
  compiling at its first call.
  """
  if not manager.all_steps():
    return True
  newest = manager.latest_step()
  if newest >= config.num_train_steps:
    return False
  try:
    tracker, clock = _loop_trackers(config, checkpoint.loop_state(manager, newest) or {})
  except errors.CheckpointError:  # restoring finds the damage and names it
    return True
  return not (tracker and tracker.should_stop()) and not clock.over(config.train_minutes)


def write_data_stats(config, task, workdir: str) -> dict:
  """Writes WORKDIR/data_stats.json (records and skipped lines per split, by reason) and logs the skips."""
  reader = sources.reader(config)
  stats = {split: reader.stats(config, task.records_kind, split) for split in ("train", "validation")}
  for split, s in stats.items():
    if any(s["skipped"].values()):
      logging.warning("%s: skipped %s lines (by reason) of %s", split, s["skipped"], config.dataset)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "data_stats.json"), "w") as f:
      json.dump(stats, f, indent=1)
  return stats


class _DiskFullReport:
  """Says once, in one line naming WORKDIR and the fix, that its disk is full: for the main thread or a dying one."""

  def __init__(self, workdir: str):
    self.line = (f"tx_jax.train: no space left on device writing to {workdir}; free space there and run the same "
                 "command to continue from its newest checkpoint (those saved before are kept), or pass another "
                 "--workdir.")
    self._lock, self._said = threading.Lock(), False

  def say(self):
    """Prints the line, unless it was printed already."""
    with self._lock:
      if not self._said:
        self._said = True
        print(self.line, file=sys.stderr, flush=True)

  def end_run_when_a_thread_dies_of_it(self):
    """Makes a background thread that dies of a full disk end the run with the line, as a kill would.

    tensorboardX's writer thread dies when its flush finds the disk full, and the main thread then
    blocks forever on its full queue. Ending the process like a kill costs nothing: the checkpoints
    committed before are intact, and a half-written one is never taken for a checkpoint.
    """
    previous = threading.excepthook

    def hook(args):
      if not errors.disk_full(args.exc_value):
        previous(args)
        return
      self.say()
      os._exit(1)  # pylint: disable=protected-access  (the main thread may never return to exit)
    threading.excepthook = hook


def main(argv):
  """Trains --config into --workdir, resuming from its newest checkpoint."""
  logging_utils.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required, e.g. "
                         "python -m tx_jax.train --config=configs/default.py --workdir=/tmp/run")
  disk_full = _DiskFullReport(os.path.abspath(os.path.expanduser(FLAGS.workdir)))
  disk_full.end_run_when_a_thread_dies_of_it()
  try:
    if parallel.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                                             force=FLAGS.distributed) and jax.process_index() > 0:
      logging.set_verbosity(logging.WARNING)  # one log per run: process 0's
    summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except errors.UserError as e:
    sys.exit(f"tx_jax.train: {e}")
  except Exception as e:  # pylint: disable=broad-except
    if not errors.disk_full(e):  # Orbax re-raises a failed checkpoint write, a full disk included, on the main thread
      raise
    disk_full.say()
    # At exit tensorboardX flushes its event file again and its thread then reads a closed queue, both failing
    # with tracebacks that say nothing new: after the one line, stderr is closed to them.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
    sys.exit(1)
  if jax.process_index() == 0:
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}, indent=1))


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.train"))
