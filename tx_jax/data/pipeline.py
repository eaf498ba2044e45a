"""Token-id pipeline: encode, filter by length, pack into fixed rows, batch and split by process.

Written by hand (not Grain/tf.data) because the whole offline corpus fits in memory and a
numpy first-fit packer with an (epoch, batch) position is short, deterministic, needs no
TensorFlow and is trivially resumable from a checkpoint.
"""

import dataclasses

import numpy as np
from absl import logging

from tx_jax.data import tokenizer as tokenizer_lib

BATCH_KEYS = ("inputs", "inputs_segment_ids", "inputs_positions",
              "decoder_inputs", "targets", "targets_segment_ids", "targets_positions")


@dataclasses.dataclass
class Examples:
  """Tokenized pairs: each source/target an int32 array ending in EOS."""

  sources: list
  targets: list

  def __len__(self):
    return len(self.sources)


def encode_pairs(processor, pairs, max_length: int | None = None, name: str = "") -> Examples:
  """Tokenizes (source, target) pairs; with `max_length`, drops pairs longer than it (EOS included).

  An empty source stays empty, so language-modelling data is pairs ("", text).
  """
  src = processor.encode([p[0] for p in pairs])
  tgt = processor.encode([p[1] for p in pairs])
  out = Examples([], [])
  dropped = 0
  for s, t in zip(src, tgt):
    if max_length is not None and (len(s) + 1 > max_length or len(t) + 1 > max_length):
      dropped += 1
      continue
    out.sources.append(np.asarray(s + [tokenizer_lib.EOS_ID] if s else [], np.int32))  # LM: no source
    out.targets.append(np.asarray(t + [tokenizer_lib.EOS_ID], np.int32))
  if dropped:
    logging.info("%s: dropped %d of %d pairs longer than %d tokens", name, dropped, len(pairs), max_length)
  return out


def pack(examples: Examples, order, row_length: int, open_rows: int = 64):
  """First-fit packing of examples (in `order`) into rows; returns a list of lists of example ids.

  A row holds examples whose sources and targets each fit in `row_length` tokens. At most
  `open_rows` rows stay open; the oldest is closed when another must be opened.
  """
  rows, space = [], []  # space: remaining (source, target) room of each open row
  done = []
  for i in order:
    ls, lt = len(examples.sources[i]), len(examples.targets[i])
    for r, (fs, ft) in enumerate(space):
      if ls <= fs and lt <= ft:
        rows[r].append(i)
        space[r] = (fs - ls, ft - lt)
        break
    else:
      if len(rows) == open_rows:
        done.append(rows.pop(0))
        space.pop(0)
      rows.append([i])
      space.append((row_length - ls, row_length - lt))
  return done + rows


def rows_to_batch(examples: Examples, rows, row_length: int) -> dict:
  """Packed rows -> dict of int32 [len(rows), row_length] arrays (see BATCH_KEYS); 0 is padding."""
  batch = {k: np.zeros((len(rows), row_length), np.int32) for k in BATCH_KEYS}
  for r, ids in enumerate(rows):
    ps = pt = 0
    for seg, i in enumerate(ids, start=1):
      s, t = examples.sources[i], examples.targets[i]
      batch["inputs"][r, ps:ps + len(s)] = s
      batch["inputs_segment_ids"][r, ps:ps + len(s)] = seg
      batch["inputs_positions"][r, ps:ps + len(s)] = np.arange(len(s))
      batch["targets"][r, pt:pt + len(t)] = t
      batch["decoder_inputs"][r, pt] = tokenizer_lib.BOS_ID
      batch["decoder_inputs"][r, pt + 1:pt + len(t)] = t[:-1]
      batch["targets_segment_ids"][r, pt:pt + len(t)] = seg
      batch["targets_positions"][r, pt:pt + len(t)] = np.arange(len(t))
      ps, pt = ps + len(s), pt + len(t)
  return batch


def count_tokens(batch: dict) -> int:
  """Non-padding tokens a batch feeds the model (inputs and targets, whichever it has)."""
  return int(sum((batch[k] != 0).sum() for k in ("inputs", "targets") if k in batch))


class TrainBatches:
  """Endless, shuffled, packed training batches with a resumable position (epoch, batch index).

  Subclasses change what a row is (`_rows_of_epoch`) and how rows become a batch (`_batch`).

  Each call returns this process's share of the next global batch: rows
  [process_index * local_rows, (process_index + 1) * local_rows).
  """

  def __init__(self, examples: Examples, *, global_rows: int, row_length: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    self.examples = examples
    self.global_rows = global_rows
    self.row_length = row_length
    self.seed = seed
    self.local_rows = global_rows // process_count
    self.process_index = process_index
    self.epoch, self.index = 0, 0
    self._epoch_rows = None

  def _rows_of_epoch(self, epoch):
    order = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
    rows = pack(self.examples, order, self.row_length)
    np.random.default_rng([self.seed, epoch, 1]).shuffle(rows)  # mix the packer's length order
    return rows

  def batches_per_epoch(self) -> int:
    """Number of full global batches in the current epoch."""
    if self._epoch_rows is None:
      self._epoch_rows = self._rows_of_epoch(self.epoch)
    return len(self._epoch_rows) // self.global_rows

  def get_state(self) -> dict:
    """Position of the next batch, to store with a checkpoint."""
    return {"epoch": self.epoch, "index": self.index}

  def set_state(self, state: dict):
    """Continues from a position returned by `get_state`."""
    if int(state["epoch"]) != self.epoch:  # the packing of another epoch is made anew
      self._epoch_rows = None
    self.epoch, self.index = int(state["epoch"]), int(state["index"])

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    while self.index >= self.batches_per_epoch():
      self.epoch, self.index, self._epoch_rows = self.epoch + 1, 0, None
    start = self.index * self.global_rows + self.process_index * self.local_rows
    self.index += 1
    return self._batch(self._epoch_rows[start:start + self.local_rows])

  def _batch(self, rows) -> dict:
    """This process's batch from its rows of the epoch."""
    return rows_to_batch(self.examples, rows, self.row_length)


def eval_slices(num_rows: int, *, global_rows: int, process_index: int = 0, process_count: int = 1,
                max_batches: int | None = None):
  """(start, stop) of this process's rows in each global batch over `num_rows` rows, in order.

  The last batch may reach past `num_rows`; callers fill it so every device gets rows.
  `max_batches` > 0 stops early.
  """
  local_rows = global_rows // process_count
  num = -(-num_rows // global_rows)
  if max_batches is not None and max_batches > 0:
    num = min(num, max_batches)
  for b in range(num):
    start = b * global_rows + process_index * local_rows
    yield start, start + local_rows


def eval_batches(examples: Examples, *, global_rows: int, row_length: int,
                 process_index: int = 0, process_count: int = 1, max_batches: int | None = None):
  """Packed batches over a whole eval split, in order, the last padded with empty rows."""
  rows = pack(examples, range(len(examples)), row_length)
  for start, stop in eval_slices(len(rows), global_rows=global_rows, process_index=process_index,
                                 process_count=process_count, max_batches=max_batches):
    chunk = rows[start:stop]
    yield rows_to_batch(examples, chunk + [[]] * (stop - start - len(chunk)), row_length)  # every device gets rows


def source_batches(sources, *, global_rows: int, lengths=(16, 32, 48, 64, 96, 128, 192, 256, 384, 512),
                   process_index: int = 0, process_count: int = 1):
  """Source-only padded batches for decoding, sorted by length to cut padding.

  Yields (ids, inputs [local_rows, L]) where ids are the indices of the rows' sentences in
  `sources` (-1 for filler rows) and L is the smallest of `lengths` that fits the batch.
  """
  order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
  local_rows = global_rows // process_count
  for start in range(0, len(order), global_rows):
    chunk = order[start:start + global_rows]
    longest = max(len(sources[i]) for i in chunk)
    length = next((l for l in lengths if l >= longest), longest)
    inputs = np.zeros((global_rows, length), np.int32)
    ids = np.full((global_rows,), -1, np.int64)
    for r, i in enumerate(chunk):
      inputs[r, :len(sources[i])] = sources[i]
      ids[r] = i
    lo = process_index * local_rows
    yield ids[lo:lo + local_rows], inputs[lo:lo + local_rows]
