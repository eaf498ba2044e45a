"""Labelled texts for sequence classification: [CLS] text [EOS] rows, shuffled batches, eval batches.

Rows are padded, not packed: the classifier reads each row's first ([CLS]) position.
"""

import dataclasses

import numpy as np
from absl import logging

from tx_jax.data import pipeline
from tx_jax.data import tokenizer as tokenizer_lib


@dataclasses.dataclass
class LabelledExamples:
  """Token arrays ([CLS] ids... EOS, int32) and their class ids."""

  tokens: list
  labels: np.ndarray  # int32 [num_examples]

  def __len__(self):
    return len(self.tokens)


def encode_labelled(processor, items, max_length: int, name: str = "") -> LabelledExamples:
  """Tokenizes (text, label) items with label >= 0, cutting texts to `max_length` tokens ([CLS], EOS included)."""
  items = [(t, l) for t, l in items if l >= 0]
  ids = processor.encode([t for t, _ in items])
  cut = sum(len(x) + 2 > max_length for x in ids)
  if cut:
    logging.info("%s: cut %d of %d texts to %d tokens", name, cut, len(items), max_length)
  tokens = [np.asarray([tokenizer_lib.BOS_ID] + x[:max_length - 2] + [tokenizer_lib.EOS_ID], np.int32)
            for x in ids]
  return LabelledExamples(tokens, np.asarray([l for _, l in items], np.int32))


def rows_to_batch(examples: LabelledExamples, ids, num_rows: int, length: int) -> dict:
  """{"inputs": int32 [num_rows, length] (0 = padding), "labels": int32 [num_rows] (-1 = filler row)}."""
  inputs = np.zeros((num_rows, length), np.int32)
  labels = np.full((num_rows,), -1, np.int32)
  for r, i in enumerate(ids):
    inputs[r, :len(examples.tokens[i])] = examples.tokens[i]
    labels[r] = examples.labels[i]
  return {"inputs": inputs, "labels": labels}


class LabelledBatches(pipeline.TrainBatches):
  """Endless batches of one example per row, reshuffled each epoch, with a resumable position."""

  def _rows_of_epoch(self, epoch):
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))  # row r: example r

  def _batch(self, rows) -> dict:
    return rows_to_batch(self.examples, rows, self.local_rows, self.row_length)


def eval_batches(examples: LabelledExamples, *, global_rows: int, row_length: int, process_index: int = 0,
                 process_count: int = 1, max_batches: int | None = None):
  """Batches over a whole split in order; the last is filled with label -1 rows."""
  for start, stop in pipeline.eval_slices(len(examples), global_rows=global_rows, process_index=process_index,
                                          process_count=process_count, max_batches=max_batches):
    yield rows_to_batch(examples, range(start, min(stop, len(examples))), stop - start, row_length)
