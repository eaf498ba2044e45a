"""The Grain pipeline on real data: shards, packing invariants, resumption token for token, bad lines, the registry."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import grain
import numpy as np
import pytest

from conftest import make_tiny_config, tiny_config_file
from tx_jax import tasks
from tx_jax.data import pipeline, sources, text_files, tokenizer as tokenizer_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _segments(batch, key="targets"):
  """The examples packed in a batch: one tuple of token ids per (row, segment)."""
  out = []
  for row, seg in zip(batch[key], batch[f"{key}_segment_ids"]):
    for s in range(1, seg.max() + 1):
      out.append(tuple(row[seg == s]))
  return out


def _lm_config(small_corpus_dir, vocab_dir, **kw):
  config = make_tiny_config(small_corpus_dir, vocab_dir, task="lm", source_language="", target_language="en",
                            num_encoder_layers=0, num_predict_sentences=0, **kw)
  config.vocab_path = os.path.join(vocab_dir, "lm_500.model")
  return config


def _kept_examples(task, config, tokenizer, split="train"):
  records = task.records(config, split)
  out = []
  for i in range(len(records)):
    example = task.features(records[i], tokenizer=tokenizer, max_length=config.max_target_length)
    if example is not None:
      out.append(example)
  return out


def _numbered_example(i: int) -> dict:
  """Example i: its number in two tokens, then (i % 5) filler tokens and EOS (lengths 3..7)."""
  return {"targets": np.asarray([i // 100 + 5, i % 100 + 5] + [7] * (i % 5) + [tokenizer_lib.EOS_ID], np.int32)}


def test_two_processes_read_disjoint_shards_whose_union_is_the_epoch():
  records = grain.MapDataset.range(1000).map(_numbered_example)
  rows = tasks.get("lm").rows(None, 32, train=True)
  numbers = lambda batch: [(s[0] - 5) * 100 + s[1] - 5 for s in _segments(batch)]
  per_process = []
  for p in range(2):
    batches = pipeline.train_batches(records, features=lambda r: r, rows=rows, global_rows=8, seed=3, data_shards=2,
                                     process_index=p, process_count=2)
    assert list(batches.shards) == [p]
    seen = []
    while len(seen) < 1000:  # two epochs of this process's 500 records (packing mixes their edges)
      seen += numbers(next(batches))
    per_process.append(seen)
  assert not set(per_process[0]) & set(per_process[1])  # disjoint
  assert set(per_process[0]) | set(per_process[1]) == set(range(1000))  # together the whole split
  assert set(per_process[0]) == set(range(0, 1000, 2))  # shard s of 2: records s, s + 2, ...


def test_one_process_reading_two_shards_equals_two_processes():
  records = grain.MapDataset.range(1000).map(_numbered_example)
  rows = tasks.get("lm").rows(None, 32, train=True)
  make = lambda **kw: pipeline.train_batches(records, features=lambda r: r, rows=rows, global_rows=8, seed=3,
                                             data_shards=2, **kw)
  one, halves = make(), [make(process_index=p, process_count=2) for p in range(2)]
  for _ in range(20):
    together = next(one)
    parts = [next(h) for h in halves]
    for k in together:
      np.testing.assert_array_equal(together[k], np.concatenate([p[k] for p in parts]))


def test_a_run_resumed_on_another_process_count_continues_each_shard(tmp_path):
  from types import SimpleNamespace
  from tx_jax.training import checkpoint
  records = grain.MapDataset.range(1000).map(_numbered_example)
  rows = tasks.get("lm").rows(None, 32, train=True)
  make = lambda **kw: pipeline.train_batches(records, features=lambda r: r, rows=rows, global_rows=8, seed=3,
                                             data_shards=2, **kw)
  halves = [make(process_index=p, process_count=2) for p in range(2)]  # saved by two processes at step 7
  data_dir = tmp_path / "checkpoints" / "7" / "data"
  data_dir.mkdir(parents=True)
  for p, half in enumerate(halves):
    for _ in range(7):
      next(half)
    (data_dir / f"process_{p}-of-2.json").write_bytes(half.state_bytes())  # the file names of Grain's handler
  one = make()  # restored by one process reading both shards
  one.set_state(checkpoint.data_state(SimpleNamespace(directory=str(tmp_path / "checkpoints")), 7))
  straight = make()
  for _ in range(7):
    next(straight)
  assert [pipeline.fingerprint(next(one)) for _ in range(10)] == [pipeline.fingerprint(next(straight))
                                                                  for _ in range(10)]
  with pytest.raises(Exception, match="data_shards=2 must be a multiple of the 3 processes"):
    make(process_index=0, process_count=3)


def test_packing_invariants_and_every_example_once_per_epoch(small_corpus_dir, vocab_dir):
  config = make_tiny_config(small_corpus_dir, vocab_dir)
  task = tasks.get(config)
  tokenizer = task.tokenizer(config, train=True)
  kept = _kept_examples(task, config, tokenizer)
  length = config.max_target_length
  rows = task.rows(config, length, train=True)(grain.MapDataset.source(kept).to_iter_dataset(), 0)
  batch = {k: np.stack([r[k] for r in rows]) for k in pipeline.BATCH_KEYS}
  assert batch["targets"].shape[1] == length  # no row longer than max_target_length
  for key in ("inputs", "targets"):
    seg, pos = batch[f"{key}_segment_ids"], batch[f"{key}_positions"]
    for r in range(len(seg)):
      ids = seg[r][seg[r] > 0]
      assert (np.diff(ids) >= 0).all() and (seg[r][len(ids):] == 0).all()  # contiguous, padding at the end
      for s in np.unique(ids):
        np.testing.assert_array_equal(pos[r][seg[r] == s], np.arange((seg[r] == s).sum()))
      np.testing.assert_array_equal(batch[key][r] != 0, seg[r] > 0)
  # decoder_inputs: BOS where each target segment starts, else the previous target token.
  starts = (batch["targets_positions"] == 0) & (batch["targets_segment_ids"] > 0)
  assert (batch["decoder_inputs"][starts] == tokenizer_lib.BOS_ID).all()
  inner = (batch["targets_positions"] > 0)
  np.testing.assert_array_equal(batch["decoder_inputs"][:, 1:][inner[:, 1:]], batch["targets"][:, :-1][inner[:, 1:]])
  # The inputs and targets of an example share a row and a segment id: each kept pair appears exactly once.
  pairs = sorted((src, tgt) for src, tgt in zip(_segments(batch, "inputs"), _segments(batch, "targets")))
  assert pairs == sorted((tuple(e["inputs"]), tuple(e["targets"])) for e in kept)
  assert len(kept) < len(task.records(config, "train"))  # some pairs are over 64 tokens and were filtered


def test_a_split_where_no_record_fits_a_row_is_one_error_not_an_endless_filter(small_corpus_dir, vocab_dir):
  from tx_jax import errors
  config = make_tiny_config(small_corpus_dir, vocab_dir, max_target_length=1)  # EOS alone: no text fits
  task = tasks.get(config)
  with pytest.raises(errors.DataError, match=r"None of 1000 training records .* longer than config.max_target_length"):
    task.train_batches(config, task.tokenizer(config, train=True), global_rows=8)
  config.max_target_length = 64  # some fit: batches come
  assert next(task.train_batches(config, task.tokenizer(config, train=True), global_rows=8))["targets"].shape == (8, 64)


def test_padded_rows_mark_their_padding_by_segment_not_by_id():
  # Marian's EOS is 0 and its pad id is not: a row's own length, not its ids, says where the padding starts.
  examples = [{"inputs": np.array([5, 0], np.int32), "labels": np.int32(1)},
              {"inputs": np.array([7, 8, 0], np.int32), "labels": np.int32(0)}]
  rows = list(pipeline.pad_rows(grain.MapDataset.source(examples).to_iter_dataset(), 0, length=4, pad_id=9))
  np.testing.assert_array_equal([r["inputs"] for r in rows], [[5, 0, 9, 9], [7, 8, 0, 9]])
  np.testing.assert_array_equal([r["inputs_segment_ids"] for r in rows], [[1, 1, 0, 0], [1, 1, 1, 0]])
  assert [int(r["labels"]) for r in rows] == [1, 0]
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  assert pipeline.count_tokens(batch) == 5


@pytest.mark.parametrize("workers", [0, 1])
def test_restored_iterator_continues_token_for_token(small_corpus_dir, vocab_dir, workers):
  config = make_tiny_config(small_corpus_dir, vocab_dir, data_workers=workers)
  task = tasks.get(config)
  tokenizer = task.tokenizer(config, train=True)
  straight = task.train_batches(config, tokenizer, global_rows=8)
  batches = [next(straight) for _ in range(5)]
  state = straight.get_state()
  rest = [next(straight) for _ in range(60)]  # across the end of the first epoch's packing
  resumed = task.train_batches(config, tokenizer, global_rows=8)
  resumed.set_state(json.loads(json.dumps(state)))  # as stored in a checkpoint
  assert [pipeline.fingerprint(next(resumed)) for _ in range(60)] == [pipeline.fingerprint(b) for b in rest]
  assert pipeline.fingerprint(batches[0]) != pipeline.fingerprint(rest[0])


def _batch_log(workdir):
  """step -> SHA-1 of the batch fed at that step (the last time it was fed, for a resumed run)."""
  out = {}
  with open(os.path.join(workdir, "batches_process0.jsonl")) as f:
    for line in f:
      entry = json.loads(line)
      out[entry["step"]] = entry["sha1"]
  return out


@pytest.mark.slow
def test_killed_and_stopped_runs_see_the_batches_of_an_uninterrupted_run(small_corpus_dir, vocab_dir, tmp_path):
  overrides = dict(num_train_steps=40, checkpoint_every_steps=5, eval_every_steps=1000, log_every_steps=10,
                   log_batches=True, data_workers=1, dropout_rate=0.1)
  config_file = tiny_config_file(tmp_path, small_corpus_dir, vocab_dir, **overrides)
  run = lambda workdir, *extra: subprocess.Popen(
    [sys.executable, "-m", "tx_jax.train", f"--config={config_file}", f"--workdir={workdir}", *extra], cwd=REPO,
    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  straight = str(tmp_path / "straight")
  assert run(straight).wait(timeout=600) == 0
  # Killed (SIGKILL) once a checkpoint past step 10 is on disk, then resumed.
  killed = str(tmp_path / "killed")
  proc = run(killed)
  checkpoints = os.path.join(killed, "checkpoints")
  deadline = time.time() + 600
  while time.time() < deadline and not (os.path.isdir(checkpoints) and any(
      d.isdigit() and int(d) >= 15 for d in os.listdir(checkpoints))):
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert run(killed).wait(timeout=600) == 0
  # Stopped at step 20 (a shorter run), then restarted with the full length.
  stopped = str(tmp_path / "stopped")
  assert run(stopped, "--config.num_train_steps=20").wait(timeout=600) == 0
  assert run(stopped).wait(timeout=600) == 0
  expected = _batch_log(straight)
  assert sorted(expected) == list(range(1, 41))
  assert _batch_log(killed) == expected
  assert _batch_log(stopped) == expected


def test_bad_lines_are_skipped_and_counted_by_reason(tmp_path, vocab_dir):
  good = [f"sentence number {i}" for i in range(20)]
  src = [*good, "", "bad \xff byte", "nul \x00 inside", "x" * (text_files.MAX_LINE_CHARS + 1), "fine"]
  tgt = [*good, "empty source", "ok", "ok", "ok", "gut"]
  data = tmp_path / "corpus"
  data.mkdir()
  for split in ("train", "validation", "test"):
    (data / f"{split}.de").write_bytes("\n".join(src).encode("utf-8").replace("\xff".encode(), b"\xff") + b"\n")
    (data / f"{split}.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
  config = make_tiny_config(str(data), vocab_dir)
  stats = sources.reader(config).stats(config, "pairs", "train")
  assert stats == {"records": 21, "skipped": {"empty": 1, "invalid_utf8": 1, "control_characters": 1, "too_long": 1}}
  records = tasks.get(config).records(config, "train")
  assert records[20] == {"source": "fine", "target": "gut"}


def test_a_split_cut_short_leaves_no_files_and_no_open_writer(tmp_path):
  from tx_jax.data import records

  def cut_short():
    yield from ({"text": f"line {i}"} for i in range(records.RECORDS_PER_SHARD + 5))  # into the second shard
    raise ValueError("line 12 is malformed")

  directory = str(tmp_path / "train")
  with pytest.raises(ValueError, match="malformed") as raised:  # its traceback keeps write_split's frame alive
    records.write_split(directory, cut_short())
  fds = "/proc/self/fd"
  open_files = [os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds) if os.path.exists(os.path.join(fds, fd))]
  assert not [f for f in open_files if directory in f], open_files
  assert not os.listdir(tmp_path) and raised.value


@pytest.mark.parametrize("validation", ["empty", "too_long"])
def test_a_validation_split_with_nothing_to_evaluate_is_one_error_before_training(small_corpus_dir, tmp_path,
                                                                                   validation):
  import shutil
  from tx_jax import errors, train
  data = tmp_path / "corpus"
  shutil.copytree(small_corpus_dir, data)  # the real training split; a validation split of nothing to evaluate
  for language in ("de", "en"):
    (data / f"validation.{language}").write_text("" if validation == "empty" else (" ".join(["word"] * 80) + "\n") * 3,
                                                 encoding="utf-8")
  config = make_tiny_config(str(data), str(tmp_path), data_cache_dir=str(tmp_path / "cache"))  # its own vocabulary
  cause = "it has no records" if validation == "empty" else "each of its 3 records is longer than"
  with pytest.raises(errors.DataError, match=f"The validation split .* has no example to evaluate: {cause}"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.listdir(tmp_path / "run" / "checkpoints")  # nothing trained, nothing saved


def test_parallel_files_of_different_lengths_name_both(tmp_path, vocab_dir):
  from tx_jax import errors
  data = tmp_path / "corpus"
  data.mkdir()
  (data / "train.de").write_text("a\nb\nc\n", encoding="utf-8")
  (data / "train.en").write_text("a\nb\n", encoding="utf-8")
  config = make_tiny_config(str(data), vocab_dir)
  with pytest.raises(errors.DataError, match="has 3 lines but .* has 2"):
    tasks.get(config).records(config, "train")


def test_the_task_registry_is_the_only_place_a_task_name_is_compared():
  names = "|".join(tasks.REGISTRY)
  compare = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
  offenders = []
  for root, _, files in os.walk(os.path.join(REPO, "tx_jax")):
    for name in files:
      path = os.path.join(root, name)
      if name.endswith(".py") and path != os.path.join(REPO, "tx_jax", "tasks", "__init__.py"):
        with open(path, encoding="utf-8") as f:
          offenders += [f"{path}:{n}" for n, line in enumerate(f, 1) if compare.search(line)]
  assert not offenders, offenders
  assert "TASK_FAMILY" not in open(os.path.join(REPO, "tx_jax", "configuration.py")).read()


def test_no_entry_point_imports_another():
  """Modules with a command line (app.run) are leaves: the libraries hold what two tools share."""
  package = os.path.join(REPO, "tx_jax")
  entry_points = {n[:-3] for n in os.listdir(package) if n.endswith(".py")
                  and 'if __name__ == "__main__":' in open(os.path.join(package, n), encoding="utf-8").read()}
  assert {"train", "evaluate", "average", "translate", "visualize"} <= entry_points
  imports = re.compile(rf"^\s*(from tx_jax import .*\b({'|'.join(entry_points)})\b|import tx_jax\.({'|'.join(entry_points)})\b"
                       rf"|from tx_jax\.({'|'.join(entry_points)}) import)")
  offenders = []
  for root, _, files in os.walk(package):
    for name in files:
      if name.endswith(".py"):
        with open(os.path.join(root, name), encoding="utf-8") as f:
          offenders += [f"{name}:{n}: {line.strip()}" for n, line in enumerate(f, 1) if imports.search(line)]
  assert not offenders, offenders
