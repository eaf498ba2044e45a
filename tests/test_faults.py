"""Runs that cannot be lost: kills, preemption, corrupt checkpoints, divergence, a held workdir, a full disk, bad input.

Every test drives the real `python -m tx_jax.train` of a tiny model on a slice of the real corpus.
"""

import glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import make_tiny_config, tiny_config_file
from tx_jax import errors, evaluate, parallel, train
from tx_jax.training import checkpoint, experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(config_file, workdir, *extra):
  """A training process whose stderr goes to a file (a pipe nobody reads would fill and stall it)."""
  log = open(f"{workdir}.{time.time_ns()}.log", "w+")
  proc = subprocess.Popen([sys.executable, "-m", "tx_jax.train", f"--config={config_file}", f"--workdir={workdir}",
                           *extra], cwd=REPO, stdout=subprocess.DEVNULL, stderr=log, text=True)
  proc.log = log
  return proc


def _finish(proc, timeout=600):
  """(exit code, stderr) of a process started by _start, once it ends (killed if it outlives `timeout`)."""
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  proc.log.seek(0)
  err = proc.log.read()
  proc.log.close()
  return proc.returncode, err


def _steps_logged(workdir) -> int:
  """Batches fed so far (config.log_batches), a progress signal that needs no log parsing."""
  path = os.path.join(workdir, "batches_process0.jsonl")
  return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def _wait_for(predicate, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return True
    time.sleep(0.1)
  return False


def _final(config, workdir, step=None):
  """(state as numpy, data position) of a workdir's newest (or `step`) checkpoint."""
  _, abstract, _, _ = experiment.build(config, parallel.make_mesh((-1, 1, 1)), abstract_only=True)
  state, data = checkpoint.restore(checkpoint.make_manager(workdir, read_only=True), abstract, step)
  return jax.device_get(state), data


def _bitwise_equal(a, b):
  leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for (path, x), y in zip(leaves_a, leaves_b):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


@pytest.mark.slow
def test_sigkills_at_random_moments_resume_bitwise(small_corpus_dir, vocab_dir, tmp_path):
  overrides = dict(num_train_steps=30, checkpoint_every_steps=2, eval_every_steps=1000, log_every_steps=10,
                   dropout_rate=0.1, attention_dropout_rate=0.1, log_batches=True, max_checkpoints_to_keep=2)
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir, **overrides)
  straight = str(tmp_path / "straight")
  assert _finish(_start(config_file, straight))[0] == 0
  killed, kills, rng = str(tmp_path / "killed"), 0, random.Random(0)
  while kills < 10:
    proc = _start(config_file, killed)
    before = _steps_logged(killed)
    # A random moment once training runs: some kills land in an asynchronous save (every 2 steps).
    _wait_for(lambda: _steps_logged(killed) > before or proc.poll() is not None)
    time.sleep(rng.uniform(0.0, 0.6))
    if proc.poll() is not None:
      break  # finished before the kill
    proc.send_signal(signal.SIGKILL)
    _finish(proc)
    kills += 1
  code, err = _finish(_start(config_file, killed))
  assert code == 0, err[-2000:]
  assert kills == 10
  config = make_tiny_config(small_corpus_dir, vocab_dir, **overrides)
  a, data_a = _final(config, straight)
  b, data_b = _final(config, killed)
  assert int(a.step) == int(b.step) == 30 and data_a == data_b
  _bitwise_equal(a, b)  # parameters, optimizer state, step and RNG


@pytest.mark.slow
def test_sigterm_saves_exits_zero_and_the_restart_continues(small_corpus_dir, vocab_dir, tmp_path):
  overrides = dict(num_train_steps=400, checkpoint_every_steps=1000, eval_every_steps=1000, log_batches=True)
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir, **overrides)
  workdir = str(tmp_path / "run")
  proc = _start(config_file, workdir)
  assert _wait_for(lambda: _steps_logged(workdir) >= 5)
  proc.send_signal(signal.SIGTERM)
  code, err = _finish(proc)
  assert code == 0, err[-2000:]
  assert "Stopped by SIGTERM after step" in err
  stopped = int(err.split("Stopped by SIGTERM after step ")[1].split(";")[0])
  assert checkpoint.make_manager(workdir, read_only=True).latest_step() == stopped
  code, err = _finish(_start(config_file, workdir, f"--config.num_train_steps={stopped + 2}"))
  assert code == 0, err[-2000:]
  assert f"Training steps {stopped}..{stopped + 2}" in err


def _train_six_steps(small_corpus_dir, vocab_dir, tmp_path):
  """A finished tiny run with checkpoints at steps 3 and 6; returns (config file, workdir)."""
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir)
  workdir = str(tmp_path / "run")
  code, err = _finish(_start(config_file, workdir))
  assert code == 0, err[-2000:]
  assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [3, 6]
  return config_file, workdir


def _truncate(step_dir):
  biggest = max((p for p in glob.glob(os.path.join(step_dir, "*", "**", "*"), recursive=True) if os.path.isfile(p)),
                key=os.path.getsize)
  with open(biggest, "r+b") as f:
    f.truncate(os.path.getsize(biggest) // 2)


def _garble(step_dir):
  for path in glob.glob(os.path.join(step_dir, "*", "**", "*"), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 1000 and "/d/" in path:  # OCDBT data files
      with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 3)
        f.write(os.urandom(512))


def _half_written(step_dir):
  for name in ("_METADATA", "manifest.ocdbt"):
    for path in glob.glob(os.path.join(step_dir, "params", name)):
      os.remove(path)


def _garbled_loop(step_dir):
  with open(os.path.join(step_dir, "loop", "metadata"), "w") as f:
    f.write('{"clock": {"train_sec')  # a torn JSON write: the arrays intact, the loop state unreadable


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate, _garble, _half_written, _garbled_loop])
def test_damaged_newest_checkpoint_falls_back_with_a_warning(small_corpus_dir, vocab_dir, tmp_path, damage):
  config_file, workdir = _train_six_steps(small_corpus_dir, vocab_dir, tmp_path)
  intact = str(tmp_path / "intact")
  shutil.copytree(workdir, intact)
  damage(os.path.join(workdir, "checkpoints", "6"))
  config = make_tiny_config(small_corpus_dir, vocab_dir)
  # Evaluation reads the parameters alone: it falls back to step 3 unless the damage spared every
  # parameter of step 6, and then it must have read exactly the undamaged values.
  _, abstract, _, _ = experiment.build(config, parallel.make_mesh(config.mesh_shape), abstract_only=True)
  params, step = checkpoint.restore_params(workdir, abstract.params)
  summary = evaluate.evaluate(config, workdir, split="test", max_sentences=4)
  assert summary["step"] == step in (3, 6)
  if step == 6:
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(checkpoint.restore_params(intact, abstract.params)[0])):
      np.testing.assert_array_equal(x, y)
  else:
    with pytest.raises(Exception, match="step 6"):
      evaluate.evaluate(config, workdir, step=6, split="test", max_sentences=4)  # an explicit step: one error
  code, err = _finish(_start(config_file, workdir, "--config.num_train_steps=8"))
  assert code == 0, err[-2000:]
  assert "Checkpoint step 6 is unreadable" in err
  manager = checkpoint.make_manager(workdir, read_only=True)
  assert manager.all_steps() == [3, 6, 8]  # trained on from 3; the damaged 6 set aside, not deleted
  assert glob.glob(os.path.join(workdir, "checkpoints", "corrupt_6_*"))
  assert _final(config, workdir)[0].step == 8


def test_when_no_checkpoint_is_readable_none_is_set_aside(small_corpus_dir, vocab_dir, tmp_path):
  workdir, intact = str(tmp_path / "run"), str(tmp_path / "intact")
  train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir), workdir)
  shutil.copytree(workdir, intact)
  for step in (3, 6):  # a cause every step shares (here: both damaged) is not taken for damage to each
    _garble(os.path.join(workdir, "checkpoints", str(step)))
  with pytest.raises(errors.CheckpointError, match=r"No readable checkpoint .*all left in place"):
    train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=8), workdir)
  assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [3, 6]  # the next attempt sees them all
  assert not glob.glob(os.path.join(workdir, "checkpoints", "corrupt_*"))
  # Once an older step reads again, the newer unreadable one is set aside and training continues from it.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "3"))
  shutil.copytree(os.path.join(intact, "checkpoints", "3"), os.path.join(workdir, "checkpoints", "3"))
  train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=8), workdir)
  assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [3, 6, 8]
  assert glob.glob(os.path.join(workdir, "checkpoints", "corrupt_6_*"))


@pytest.mark.slow
def test_diverging_run_stops_with_the_causes_and_keeps_the_last_good_checkpoint(small_corpus_dir, vocab_dir,
                                                                                 tmp_path):
  overrides = dict(learning_rate=1e9, warmup_steps=0, schedule="constant", num_train_steps=50,
                   checkpoint_every_steps=1, max_checkpoints_to_keep=2, eval_every_steps=1000)
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir, **overrides)
  workdir = str(tmp_path / "run")
  code, err = _finish(_start(config_file, workdir))
  assert code != 0 and "Traceback" not in err
  line = [l for l in err.splitlines() if "training diverged at step" in l]
  assert line and "config.learning_rate=1000000000.0" in line[0], err[-2000:]
  diverged = int(line[0].split("diverged at step ")[1].split(" ")[0])
  manager = checkpoint.make_manager(workdir, read_only=True)
  assert manager.latest_step() == diverged - 1  # the bad step was not saved
  state, _ = _final(make_tiny_config(small_corpus_dir, vocab_dir, **overrides), workdir)
  assert not checkpoint.non_finite_leaves(state)


@pytest.mark.slow
def test_a_second_trainer_on_a_held_workdir_is_refused(small_corpus_dir, vocab_dir, tmp_path):
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir, num_train_steps=100000,
                                 checkpoint_every_steps=100000, eval_every_steps=100000, log_batches=True)
  workdir = str(tmp_path / "run")
  first = _start(config_file, workdir)
  try:
    assert _wait_for(lambda: _steps_logged(workdir) >= 1)
    code, err = _finish(_start(config_file, workdir))
    assert code != 0 and "Traceback" not in err
    assert f"in use by another tx_jax.train (pid {first.pid}" in err
  finally:
    first.send_signal(signal.SIGKILL)
    _finish(first)
  # The lock of the killed run is stale: a new run takes it over.
  code, err = _finish(_start(config_file, workdir, "--config.num_train_steps=2"))
  assert code == 0, err[-2000:]


def _cli(module, *args, stdin=b""):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, input=stdin, capture_output=True,
                        timeout=600)


@pytest.mark.slow
def test_translate_turns_every_input_line_into_one_output_line(small_corpus_dir, vocab_dir, tmp_path):
  _, workdir = _train_six_steps(small_corpus_dir, vocab_dir, tmp_path)
  lines = [b"Klicken Sie auf OK.", b"", b"   ", b"bad \xff\xfe bytes", ("Wort " * 3000).encode(), b"Ende"]
  result = _cli("tx_jax.translate", f"--workdir={workdir}", "--beam_size=1", stdin=b"\n".join(lines) + b"\n")
  err = result.stderr.decode()
  assert result.returncode == 0, err[-2000:]
  out = result.stdout.decode("utf-8").split("\n")
  assert len(out) == len(lines) + 1 and out[-1] == "" and out[1] == out[2] == ""
  assert "Replaced invalid UTF-8 in 1 of 6 input lines" in err
  assert "Cut 1 of 4 sources to their first 64 tokens" in err


@pytest.mark.slow
def test_evaluate_mistakes_are_one_line_each(small_corpus_dir, vocab_dir, tmp_path):
  config_file, workdir = _train_six_steps(small_corpus_dir, vocab_dir, tmp_path)
  empty = tmp_path / "empty"
  empty.mkdir()
  no_checkpoints = tmp_path / "no_checkpoints"
  no_checkpoints.mkdir()
  shutil.copy(os.path.join(workdir, "config.json"), no_checkpoints / "config.json")
  cases = [([f"--workdir={empty}"], "config.json is missing"),
           ([f"--workdir={no_checkpoints}"], "No checkpoint"),
           ([f"--workdir={workdir}", "--step=5"], "No checkpoint at step 5"),
           ([f"--workdir={workdir}", f"--config={config_file}", "--config.vocab_path=/nonexistent/v.model"],
            "/nonexistent/v.model is missing")]
  for args, text in cases:
    result = _cli("tx_jax.evaluate", *args)
    err = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in err, (args, err[-2000:])
    assert text in err.strip().splitlines()[-1], (args, err[-2000:])


def _fill(ballast, room):
  """Grows the file `ballast` until its filesystem has `room` bytes left."""
  stat = os.statvfs(os.path.dirname(ballast))
  size, free = os.path.getsize(ballast) if os.path.exists(ballast) else 0, stat.f_bavail * stat.f_frsize
  if free > room:
    with open(ballast, "ab") as f:
      os.posix_fallocate(f.fileno(), size, free - room)
  assert os.statvfs(os.path.dirname(ballast)).f_bavail * stat.f_frsize <= room


@pytest.mark.slow
def test_a_full_disk_fails_in_one_line_and_keeps_the_earlier_checkpoint(small_corpus_dir, vocab_dir, tmp_path):
  if os.geteuid() != 0:
    pytest.skip("needs root to mount a small tmpfs as the workdir")
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir)  # data cache and logs stay off the tmpfs
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", workdir], capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs on {workdir}: {mounted.stderr.strip()}")
  try:
    code, err = _finish(_start(config_file, workdir, "--config.num_train_steps=3"))
    assert code == 0, err[-2000:]
    config = make_tiny_config(small_corpus_dir, vocab_dir)
    before, data_before = _final(config, workdir)
    assert int(before.step) == 3
    ballast = os.path.join(workdir, "ballast")
    # With 64 KiB left the resumed run's event file fits and its step-6 checkpoint does not; then with
    # none left, as that failed save may leave it, the first write to fail is another; and in a long run
    # that neither saves nor evaluates, the only writer is tensorboardX's thread, which dies of it: the
    # run must end, not wait forever on that thread's queue.
    long_run = ("--config.num_train_steps=100000", "--config.checkpoint_every_steps=100000",
                "--config.eval_every_steps=100000")
    for room, extra in ((64 * 1024, ()), (0, ()), (0, long_run)):
      _fill(ballast, room)
      code, err = _finish(_start(config_file, workdir, *extra))
      assert code != 0 and "Traceback" not in err, err[-3000:]
      lines = [l for l in err.splitlines() if l.strip() and not re.match(r"[IW]\d{4} ", l)]  # but INFO and WARNING
      assert len(lines) == 1, err[-3000:]
      assert lines[0].startswith(f"tx_jax.train: no space left on device writing to {workdir}; free space there"), lines
      assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [3]
      after, data_after = _final(config, workdir)
      _bitwise_equal(before, after)
      assert data_after == data_before
    # The other tools that write (here into the same full disk) end with one line naming where, too.
    for program, args in (("evaluate", ["--split=test", "--max_sentences=4"]),
                          ("average", ["--last=1", f"--out={workdir}/avg"])):
      result = subprocess.run([sys.executable, "-m", f"tx_jax.{program}", f"--workdir={workdir}", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
      lines = [l for l in result.stderr.splitlines() if l.strip() and not re.match(r"[IW]\d{4} ", l)]
      assert result.returncode != 0 and len(lines) == 1, result.stderr[-3000:]
      assert lines[0].startswith(f"tx_jax.{program}: no space left on device writing to {workdir}"), lines
    # The fix the line names: with space again, the same command continues from step 3.
    os.remove(ballast)
    code, err = _finish(_start(config_file, workdir))
    assert code == 0, err[-2000:]
    assert "Training steps 3..6" in err
    assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [3, 6]
  finally:
    subprocess.run(["umount", "--lazy", workdir], check=True)  # lazy: never fails on a file still open


def test_resuming_with_another_model_or_optimizer_stops_in_one_line_and_keeps_every_checkpoint(small_corpus_dir,
                                                                                              vocab_dir, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=3), workdir)
  # A changed model field is found in the run's config.json before anything is built; a changed optimizer
  # (an EMA in its state) when its checkpoint's tree does not fit: neither is damage to set aside.
  for overrides, names in (({"emb_dim": 64}, "emb_dim"), ({"ema_decay": 0.999}, "optimizer state")):
    with pytest.raises(errors.ConfigError, match=names):
      train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, **overrides), workdir)
    assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [3]
    assert not glob.glob(os.path.join(workdir, "checkpoints", "corrupt_*"))
  train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir), workdir)  # the run's own config resumes
  assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [3, 6]


def test_a_resumed_run_whose_init_from_source_is_gone_keeps_the_model_it_took_from_it(small_corpus_dir, vocab_dir,
                                                                                      tmp_path):
  source, run = str(tmp_path / "source"), str(tmp_path / "run")
  train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=3), source)
  # The run names another emb_dim; the source's (32) replaces it, and config.json records that.
  tuned = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=3, init_from=source, emb_dim=64)
  train.train_and_evaluate(tuned, run)
  shutil.rmtree(source)
  tuned.num_train_steps = 6
  train.train_and_evaluate(tuned, run)
  assert checkpoint.make_manager(run, read_only=True).all_steps() == [3, 6]
