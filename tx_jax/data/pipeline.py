"""Grain input pipelines: this process's shards of a split, tokenized, filtered, packed, batched, prefetched.

Grain (not tf.data) because it reads random-access sources (ArrayRecord, tfds.data_source)
without TensorFlow, shuffles by index permutation, runs the host work in worker processes
and checkpoints its iterator state.

Training batches come from `data_shards` logical shards of the training split (by default
one per process, fixed for the life of a run): shard s holds records s, s + S, s + 2S, ...,
shuffled by a seeded per-epoch index permutation, repeated forever, tokenized, filtered by
length and packed with Grain's first-fit packer. A global batch is the shards' batches side
by side (global_rows / S rows each); a process reads only its own shards, so the data a run
sees depends on the seed and S, never on the number of processes or devices.
"""

import functools
import hashlib
import json
import os
import signal
import threading
import time

import grain
import numpy as np
from absl import flags

from tx_jax import errors
from tx_jax.data import tokenizer as tokenizer_lib

PACKING_BINS = 64  # rows packed at once; Grain emits them together (as dense as the old packer at 64)
# Records are read and tokenized in the thread that asks for them. Grain's default (16 threads,
# 500 records ahead) cost 375 us of overhead per example on 2 cores against 21 us here; the
# overlap with the device step comes from the worker processes (data_workers) instead.
READ = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
PREFETCH = 2  # batches made ahead of the training step by a background thread
BATCH_KEYS = ("inputs", "inputs_segment_ids", "inputs_positions",
              "decoder_inputs", "targets", "targets_segment_ids", "targets_positions")


def real_tokens(batch: dict, key: str) -> int:
  """Non-padding tokens of feature `key` [rows, len].

  Rows mark padding by segment id 0, since a real token may have id 0 (Marian's EOS); every task's
  rows carry segment ids, and a batch built by hand without them is taken as zero-padded.
  """
  return int((batch.get(f"{key}_segment_ids", batch[key]) != 0).sum())


def count_tokens(batch: dict) -> int:
  """Non-padding tokens a batch feeds the model (inputs and targets, whichever it has)."""
  return sum(real_tokens(batch, k) for k in ("inputs", "targets") if k in batch)


def count_target_tokens(batch: dict) -> int:
  """Non-padding tokens the loss is taken over: the targets, or the inputs of batches without targets."""
  return real_tokens(batch, "targets" if "targets" in batch else "inputs")


def fingerprint(batch: dict) -> str:
  """SHA-1 of a batch's arrays (keys sorted): equal fingerprints mean the same token ids."""
  h = hashlib.sha1()
  for k in sorted(batch):
    h.update(k.encode())
    h.update(np.ascontiguousarray(batch[k]).tobytes())
  return h.hexdigest()


def with_decoder_inputs(row: dict, bos_id: int = tokenizer_lib.BOS_ID) -> dict:
  """A packed row plus decoder_inputs: each segment's targets shifted right behind `bos_id` (0 = padding)."""
  targets, positions, segments = row["targets"], row["targets_positions"], row["targets_segment_ids"]
  shifted = np.concatenate([np.zeros_like(targets[:1]), targets[:-1]])
  decoder_inputs = np.where(positions == 0, bos_id, shifted) * (segments > 0)
  return dict(row, decoder_inputs=decoder_inputs.astype(np.int32))


def packed(ds: grain.IterDataset, lengths: dict, *, seed: int, shuffle_bins: bool,
           bos_id: int = tokenizer_lib.BOS_ID) -> grain.IterDataset:
  """First-fit packs examples {feature: int32 [len]} into rows of `lengths`, with segment ids and positions.

  Grain's packer gives every feature f its f_segment_ids (1, 2, ... per example; 0 = padding) and
  f_positions (0.. within each example); an example's features all go into the same row.
  """
  ds = grain.experimental.FirstFitPackIterDataset(ds, length_struct=lengths, num_packing_bins=PACKING_BINS,
                                                  seed=seed, shuffle_bins=shuffle_bins)
  return ds.map(functools.partial(with_decoder_inputs, bos_id=bos_id)) if "targets" in lengths else ds


def padded(example: dict, length: int, pad_id: int = 0) -> dict:
  """A one-example row: its "inputs" padded with `pad_id` to `length`, their segment ids, other features as they are.

  The segment ids (1 on the example's tokens, 0 on the padding) mark the padding whatever the ids:
  a model's pad id may be a real token of another vocabulary (as packed rows' segment ids do).
  """
  inputs = np.full((length,), pad_id, np.int32)
  inputs[:len(example["inputs"])] = example["inputs"]
  segments = (np.arange(length) < len(example["inputs"])).astype(np.int32)
  return dict(example, inputs=inputs, inputs_segment_ids=segments)


AUTO_WORKERS = -1  # config.data_workers default: see worker_count


def worker_count(requested: int, backend: str) -> int:
  """Grain worker processes per shard: `requested`, or for AUTO_WORKERS none on a CPU backend and 2 elsewhere.

  On a CPU backend the host's cores run the model: a worker process only takes them from XLA's
  threads (and the trainer then polls for its output), while the prefetch thread overlaps the same
  host work with the step at no such cost (experiments/README.md, "Data at scale"). GPU and TPU
  hosts have cores to spare for it.
  """
  if requested != AUTO_WORKERS:
    return requested
  return 0 if backend == "cpu" else 2


def shard_ids(data_shards: int, process_index: int, process_count: int) -> range:
  """The logical shards process `process_index` of `process_count` reads (a contiguous run of them)."""
  if data_shards % process_count:
    raise errors.ConfigError(f"config.data_shards={data_shards} must be a multiple of the {process_count} "
                             "processes (each process reads the same number of shards).")
  per = data_shards // process_count
  return range(process_index * per, (process_index + 1) * per)


class ShardedBatches:
  """This process's batches: the batches of its shards' iterators side by side, with a checkpointable state."""

  def __init__(self, make_shard, shards: range, data_shards: int):
    self.shards, self.data_shards = shards, data_shards
    self.datasets = {s: make_shard(s) for s in shards}
    self.iterators = {s: iter(ds) for s, ds in self.datasets.items()}

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    parts = [next(self.iterators[s]) for s in self.shards]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> dict:
    """{"data_shards": S, "shards": {shard id: Grain iterator state}} of this process's shards."""
    return {"data_shards": self.data_shards, "shards": {str(s): self.iterators[s].get_state() for s in self.shards}}

  def set_state(self, state: dict):
    """Continues from `get_state()` output; `state["shards"]` may hold other processes' shards too."""
    if int(state["data_shards"]) != self.data_shards:
      raise errors.CheckpointError(
        f"The checkpoint's data position is for config.data_shards={state['data_shards']}, this run reads "
        f"{self.data_shards}; set --config.data_shards={state['data_shards']} (any process count dividing it).")
    for s in self.shards:
      if str(s) not in state["shards"]:
        raise errors.CheckpointError(f"The checkpoint holds no data position of shard {s}.")
      self.iterators[s].set_state(state["shards"][str(s)])

  def close(self):
    """Stops the shards' Grain worker processes (if any)."""
    for it in self.iterators.values():
      if hasattr(it, "close"):
        it.close()

  def state_bytes(self) -> bytes:
    """get_state() as JSON bytes (Grain's Orbax handler stores bytes states as they are)."""
    return json.dumps(self.get_state()).encode()


def train_batches(records: grain.MapDataset, *, features, rows, global_rows: int, seed: int, data_shards: int,
                  process_index: int = 0, process_count: int = 1, workers: int = 0) -> ShardedBatches:
  """Endless shuffled training batches of this process (see the module doc).

  `features(record) -> {feature: int32 array} | None` tokenizes one record (None drops it);
  `rows(IterDataset, seed) -> IterDataset` makes fixed-size rows of examples (pack or pad).
  With `workers` > 0 each shard's host work runs in that many Grain worker processes.
  """
  if global_rows % data_shards:
    raise errors.ConfigError(f"config.data_shards={data_shards} must divide the {global_rows} rows of a global "
                             "batch (per_device_batch_size x devices).")
  if len(records) == 0:
    raise errors.DataError("The training split has no records; check the corpus and config.dataset.")
  _check_some_fit(records, features)

  def make_shard(s):
    shard_seed = int(np.random.SeedSequence([seed, s]).generate_state(1)[0])
    ds = records[s::data_shards].shuffle(seed=shard_seed).repeat()  # a new permutation every epoch
    ds = ds.map(features).filter(_kept).to_iter_dataset(READ)
    ds = rows(ds, shard_seed).batch(global_rows // data_shards, drop_remainder=True)
    if workers:
      if not flags.FLAGS.is_parsed():  # Grain's workers read its absl flags; a library caller has parsed none
        flags.FLAGS.mark_as_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=4),
                          worker_init_fn=_worker_init)
    # A thread keeps PREFETCH batches ready, filling them while the device step runs (XLA releases the GIL).
    return grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=PREFETCH)

  return ShardedBatches(make_shard, shard_ids(data_shards, process_index, process_count), data_shards)


def _check_some_fit(records: grain.MapDataset, features, sample: int = 1000):
  """DataError unless some of `sample` records spread over the split give an example.

  Without one, the endless training stream would filter forever: no first batch, no error.
  """
  n = len(records)
  picked = [records[int(i)] for i in np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))]
  picked = [r for r in picked if r is not None]
  if picked and not any(features(r) is not None for r in picked):
    raise errors.DataError(f"None of {len(picked)} training records spread over the split fits a row: each is "
                           "longer than config.max_target_length tokens; raise it (with config.max_len) or check "
                           "the corpus.")


def _worker_init(worker_index: int, worker_count: int):
  """In a Grain worker: leave Ctrl-C to the trainer (it stops the workers), and exit when the trainer is gone.

  Grain has no parent-death check: a trainer killed with SIGKILL would leave its workers looping.
  """
  del worker_index, worker_count
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)  # pylint: disable=protected-access
  threading.Thread(target=watch, daemon=True).start()


def _kept(example) -> bool:
  return example is not None


def eval_batches(records: grain.MapDataset, *, features, rows, empty_row: dict, local_rows: int,
                 data_shards: int, process_index: int = 0, process_count: int = 1, max_batches: int | None = None):
  """This process's batches over a whole split, in order; every example once, filler rows after the end.

  Logical shard s of S is the s-th contiguous part of the split; a process reads its shards
  side by side as in training, so what is evaluated depends on S, not on the process count.
  Yields (batch, done) where done says this process has no example left; the caller stops when
  every process is done (or after `max_batches` > 0 batches).
  """
  shards = shard_ids(data_shards, process_index, process_count)
  n, per_shard = len(records), local_rows // len(shards)
  iterators = []
  for s in shards:
    part = records[n * s // data_shards:n * (s + 1) // data_shards].map(features).filter(_kept)
    iterators.append(iter(rows(part.to_iter_dataset(READ), 0).batch(per_shard, drop_remainder=False)))
  count = 0
  while max_batches is None or max_batches <= 0 or count < max_batches:
    parts, done = [], True
    for it in iterators:
      part = next(it, None)
      done &= part is None
      parts.append(_fill(part, empty_row, per_shard))
    yield {k: np.concatenate([p[k] for p in parts]) for k in empty_row}, done
    count += 1


def _fill(batch: dict | None, empty_row: dict, num_rows: int) -> dict:
  """`batch` ([r <= num_rows, ...] arrays, or None) completed with `empty_row`s to num_rows rows."""
  have = 0 if batch is None else len(next(iter(batch.values())))
  out = {}
  for k, filler in empty_row.items():
    rows = np.broadcast_to(filler, (num_rows - have, *np.shape(filler))).astype(np.asarray(filler).dtype)
    out[k] = rows if batch is None else np.concatenate([batch[k].astype(rows.dtype), rows])
  return out


def empty_packed_row(lengths: dict) -> dict:
  """An all-padding packed row with every key a packed batch of `lengths` has."""
  keys = [k for f in lengths for k in (f, f"{f}_segment_ids", f"{f}_positions")]
  if "targets" in lengths:
    keys.append("decoder_inputs")
  return {k: np.zeros((lengths[k.split("_")[0]] if k != "decoder_inputs" else lengths["targets"],), np.int32)
          for k in keys}


def source_batches(sources, *, global_rows: int, lengths=(16, 32, 48, 64, 96, 128, 192, 256, 384, 512),
                   process_index: int = 0, process_count: int = 1, pad_id: int = 0):
  """Source-only padded batches for decoding, sorted by length to cut padding.

  Yields (ids, inputs [local_rows, L]) where ids are the indices of the rows' sentences in
  `sources` (-1 for filler rows) and L is the smallest of `lengths` that fits the batch; rows are
  padded with `pad_id` (the model's: Marian's EOS is 0).
  """
  order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
  local_rows = global_rows // process_count
  for start in range(0, len(order), global_rows):
    chunk = order[start:start + global_rows]
    longest = max(len(sources[i]) for i in chunk)
    length = next((l for l in lengths if l >= longest), longest)
    inputs = np.full((global_rows, length), pad_id, np.int32)
    ids = np.full((global_rows,), -1, np.int64)
    for r, i in enumerate(chunk):
      inputs[r, :len(sources[i])] = sources[i]
      ids[r] = i
    lo = process_index * local_rows
    yield ids[lo:lo + local_rows], inputs[lo:lo + local_rows]


# Rows of a task: functools.partial(pack_rows, lengths=...) or functools.partial(pad_rows, length=...).
def pack_rows(ds: grain.IterDataset, seed: int, *, lengths: dict, shuffle_bins: bool = True,
              bos_id: int = tokenizer_lib.BOS_ID) -> grain.IterDataset:
  """Packed rows of `lengths` (see `packed`); evaluation keeps the packer's order (shuffle_bins=False)."""
  return packed(ds, lengths, seed=seed, shuffle_bins=shuffle_bins, bos_id=bos_id)


def pad_rows(ds: grain.IterDataset, seed: int, *, length: int, pad_id: int = 0) -> grain.IterDataset:
  """One example per row, "inputs" padded with `pad_id` to `length` (see `padded`)."""
  del seed
  return ds.map(functools.partial(padded, length=length, pad_id=pad_id))
