"""The Task interface: everything a training task owns, from its records to its evaluation report.

A task names its model family, reads its records through the corpus reader of
`config.dataset`, tokenizes them, makes rows (packed or padded), sums its loss and metrics,
adds its baselines to an evaluation and counts its FLOPs. The trainer, the evaluator and the
attention tools only call these methods; tx_jax.tasks is the one place a task is looked up by
name.
"""

import functools
import os

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from tx_jax import errors
from tx_jax.data import hf_tokenizers
from tx_jax.data import pipeline
from tx_jax.data import sources
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.training import run_vocab

BASELINE_SAMPLE = 100_000  # training records tokenized for the baselines (unigram counts, majority class)


class Task:
  """One training task; subclasses fill in the class attributes and the abstract methods."""

  name = ""
  family = ""  # tx_jax.models.registry.FAMILIES key
  records_kind = "pairs"  # what it reads from a corpus: pairs | texts | labelled
  vocab_suffix = ""  # tells vocabularies of the same corpus apart by what they must hold
  with_mask = False  # the vocabulary reserves tokenizer.MASK_ID for [MASK]
  needs_own_vocabulary = False  # only tx_jax's SentencePiece vocabulary will do (its [MASK] and special ids)
  skips_padding = False  # metric_sums takes token_capacity (config.token_capacity "auto" or < 1)

  # --- configuration
  def validate(self, config, fail):
    """Task-specific config checks; `fail(field, value, why)` raises the one-line error."""

  # --- data
  def records(self, config, split: str):
    """The split's records as a random-access grain.MapDataset (tx_jax.data.sources)."""
    return getattr(sources.reader(config), self.records_kind)(config, split)

  def vocab_path(self, config) -> str:
    """Where this corpus's SentencePiece model for this task kind and vocabulary size is cached."""
    if config.get("vocab_path"):
      return os.path.expanduser(config.vocab_path)
    key = sources.reader(config).vocab_key(config, self.records_kind) + self.vocab_suffix
    return os.path.join(os.path.expanduser(config.data_cache_dir), "vocab", f"{key}_{config.vocab_size}.model")

  def vocab_texts(self, record: dict) -> list:
    """The texts of one record a vocabulary is trained on."""
    return [record["text"]]

  def tokenizer(self, config, *, train: bool = False, scoring: bool = False, resumed_in: str | None = None):
    """The run's tokenizer (tx_jax.data.tokenizer's interface); with `train`, trained first if missing (unless resumed).

    tx_jax's own SentencePiece model is trained on a sample of the training split, except for a
    run resumed in WORKDIR `resumed_in` (whose config.json names no copy of its own): one trained
    anew would not match its embeddings, so a missing file is one DataError. A
    config.vocab_path that is an imported model's tokenizer/ directory is read as it is (not for
    training or `scoring` a task that needs_own_vocabulary; the attention tools may use it).

    In a multi-process run process 0 trains it and the others wait for the file.
    """
    path = self.vocab_path(config)
    if hf_tokenizers.is_tokenizer_dir(path):  # an imported model's own tokenizer (tx_jax.import_hf)
      if self.needs_own_vocabulary and (train or scoring):
        raise errors.ConfigError(f"config.vocab_path={path} is an imported tokenizer; config.task={self.name!r} "
                                 "masks with tx_jax's own [MASK] and special ids, so it trains and is scored on a "
                                 "vocabulary of its own (leave vocab_path empty); fine-tune an imported BERT "
                                 "with task='classification' instead.")
      tokenizer = hf_tokenizers.load(path, config)
      tokenizer.encode("")  # loads now: an unreadable file is one error here
      return tokenizer
    if train and not os.path.exists(path):
      if resumed_in:
        copy = os.path.join(resumed_in, run_vocab.SENTENCEPIECE_NAME)
        raise errors.DataError(f"The vocabulary {path} is missing, and the run in {resumed_in} trained with one that "
                               f"{resumed_in}/config.json does not record (a run from before runs kept their own copy, "
                               "or a workdir copied without its config.json): set --config.vocab_path to the "
                               f"SentencePiece file it trained with ({copy}, if its copy is there); one trained anew "
                               "would not match its embeddings.")
      if jax.process_index() == 0:
        records = sources.reader(config).vocab_records(config, self.records_kind)
        limit = config.get("vocab_sample_sentences", 2_000_000)

        def texts():
          for i in tokenizer_lib.sample_indices(len(records), limit, config.seed):
            record = records[int(i)]
            if record is not None:
              yield from self.vocab_texts(record)
        tokenizer_lib.train_or_load(path, texts, config.vocab_size, with_mask=self.with_mask,
                                    max_sentences=2 * limit)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"vocabulary {path}")
    tokenizer = tokenizer_lib.Tokenizer(path)
    tokenizer.processor  # pylint: disable=pointless-statement  (loads now: a missing file is one error here)
    if self.with_mask and tokenizer.piece_to_id("[MASK]") != tokenizer_lib.MASK_ID:
      raise errors.DataError(f"The SentencePiece model {path} has no [MASK] piece at id {tokenizer_lib.MASK_ID} "
                             "(it was trained for another task); delete it or set config.vocab_path to a new file.")
    return tokenizer

  def features(self, record: dict, *, tokenizer, max_length: int):
    """{feature: int32 [len]} of one record, or None to leave it out (too long)."""
    raise NotImplementedError

  def rows(self, config, length: int, *, train: bool, bos_id: int = tokenizer_lib.BOS_ID):
    """rows(IterDataset, seed) -> IterDataset of fixed-length rows (tx_jax.data.pipeline.pack_rows/pad_rows).

    `bos_id` (the tokenizer's) starts each decoder input of tasks that shift their targets.
    """
    raise NotImplementedError

  def empty_row(self, config, length: int) -> dict:
    """A filler row of an evaluation batch: it adds nothing to any sum."""
    raise NotImplementedError

  def train_batches(self, config, tokenizer, *, global_rows: int, process_index: int = 0, process_count: int = 1,
                    data_shards: int | None = None) -> pipeline.ShardedBatches:
    """This process's endless training batches ([global_rows / processes, max_target_length] arrays)."""
    length = config.max_target_length
    return pipeline.train_batches(
      self.records(config, "train"), features=functools.partial(self.features, tokenizer=tokenizer, max_length=length),
      rows=self.rows(config, length, train=True, bos_id=tokenizer.bos_id), global_rows=global_rows, seed=config.seed,
      data_shards=data_shards or config.get("data_shards") or process_count, process_index=process_index,
      process_count=process_count,
      workers=pipeline.worker_count(config.get("data_workers", pipeline.AUTO_WORKERS), jax.default_backend()))

  def eval_batches(self, config, tokenizer, split: str, *, global_rows: int, process_index: int = 0,
                   process_count: int = 1, max_batches: int | None = None, data_shards: int | None = None):
    """(batch, done) pairs of this process over the whole split, in order (tx_jax.data.pipeline.eval_batches).

    The shards are the run's config.data_shards where they split this process's rows evenly, else one
    per process: a run evaluated on fewer devices than it trained on (say 16 shards, 8 rows) still
    reads every example once, and the sums over a whole split do not depend on the shards.
    """
    length = config.max_eval_target_length
    local_rows = global_rows // process_count
    shards = data_shards or config.get("data_shards") or process_count
    if shards % process_count or local_rows % (shards // process_count):
      logging.info("Evaluating in %d data shard(s), one per process: config.data_shards=%d does not split this "
                   "process's %d rows evenly.", process_count, shards, local_rows)
      shards = process_count
    return pipeline.eval_batches(
      self.records(config, split), features=functools.partial(self.features, tokenizer=tokenizer, max_length=length),
      rows=self.rows(config, length, train=False, bos_id=tokenizer.bos_id), empty_row=self.empty_row(config, length),
      local_rows=local_rows, data_shards=shards, process_index=process_index, process_count=process_count,
      max_batches=max_batches)

  def check_evaluable(self, config, tokenizer, split: str):
    """DataError unless some example of `split` fits config.max_eval_target_length (read up to the first that does).

    Without one, an evaluation would sum nothing: found here, before anything is compiled or trained.
    """
    records = self.records(config, split)
    if next(self._examples(config, tokenizer, records, range(len(records))), None) is not None:
      return
    raise errors.DataError(
      f"The {split} split of config.dataset={config.dataset!r} has no example to evaluate: " + (
        f"each of its {len(records)} records is longer than config.max_eval_target_length="
        f"{config.max_eval_target_length} tokens; raise it (with config.max_len)" if len(records) else
        "it has no records; check the corpus") + " (data_stats.json counts its records and skipped lines).")

  def evaluated_examples(self, config, tokenizer, split: str, limit: int | None = None) -> list:
    """The examples (feature dicts) of `split` an evaluation scores, in order; `limit` samples training."""
    records = self.records(config, split)
    indices = range(len(records)) if limit is None else tokenizer_lib.sample_indices(len(records), limit)
    return list(self._examples(config, tokenizer, records, indices))

  def _examples(self, config, tokenizer, records, indices):
    """The features of `records` at `indices` that fit config.max_eval_target_length, lazily, in order."""
    for i in indices:
      record = records[int(i)]
      example = None if record is None else self.features(record, tokenizer=tokenizer,
                                                          max_length=config.max_eval_target_length)
      if example is not None:
        yield example

  # --- model
  def metric_sums(self, model: nnx.Module, batch: dict, *, label_smoothing: float, deterministic: bool, rng=None,
                  mask_rate: float = 0.15) -> dict:
    """Summed loss and metrics of `model` on one batch (tx_jax.training.losses).

    A task with `skips_padding` also takes token_capacity=(groups, fraction, fits) (config.token_capacity
    "auto" or < 1; tx_jax.models.token_layout.where_it_fits).
    """
    raise NotImplementedError

  def padding_segments(self, batch: dict) -> dict:
    """{name: [rows, len], 0 at padding} of `batch` (numpy or jax): the rows a task that skips_padding unpads."""
    raise NotImplementedError

  def forward_flops(self, cfg, batch: dict) -> float:
    """Multiply-adds of one forward pass over `batch` (numpy arrays), matmuls only (tx_jax.training.perf)."""
    raise NotImplementedError

  def input_tokens(self, ids: list, tokenizer) -> list:
    """The token ids the model (an encoder-decoder's encoder) reads for a text's `ids`: the specials around them."""
    return ids

  # --- evaluation
  def baselines(self, config, tokenizer, split: str, results: dict) -> dict:
    """Extra metrics of an evaluation of `split` ({split}/name: value), beside `results`."""
    return {}

  def report(self, summary: dict) -> list:
    """The task's lines of `python -m tx_jax.evaluate`'s printed report."""
    return []


def dropout_rngs(deterministic: bool, rng):
  """The nnx.Rngs that draw dropout from `rng` in a training step; None when evaluating."""
  return nnx.Rngs(dropout=rng) if not deterministic and rng is not None else None


def tokens_of(examples: list, key: str = "targets") -> np.ndarray:
  """All tokens of `key` of a list of examples, concatenated."""
  return np.concatenate([e[key] for e in examples]) if examples else np.zeros((0,), np.int32)
