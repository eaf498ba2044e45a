"""Data as the trainer sees it, for every task: raw items, the vocabulary, tokenized splits, batches."""

import dataclasses
import os

from tx_jax.data import labelled
from tx_jax.data import pipeline
from tx_jax.data import sources
from tx_jax.data import tokenizer as tokenizer_lib

ENCODER_TASKS = ("mlm", "classification")  # share one vocabulary with a [MASK] piece per dataset


@dataclasses.dataclass
class TaskData:
  """Everything a run reads: the tokenizer and each split, raw and tokenized.

  Translation items are (source, target) pairs; lm and mlm use ("", text); classification
  uses (text, label) and labelled.LabelledExamples.
  """

  processor: object  # sentencepiece.SentencePieceProcessor
  pairs: dict  # split -> list of raw items
  train: object  # pipeline.Examples | labelled.LabelledExamples | None
  eval: dict  # split -> tokenized examples; pairs longer than max_eval_target_length dropped (cut, for labels)


def task_of(config) -> str:
  """The config's task (translation when unset, as in configs written before tasks existed)."""
  return config.get("task", "translation")


def vocab_path(config) -> str:
  """Where the SentencePiece model of this dataset, task kind and vocabulary size is cached."""
  if config.get("vocab_path"):
    return os.path.expanduser(config.vocab_path)
  name = config.tfds_name.replace("/", "_") if config.dataset == "tfds" else config.dataset
  langs = "-".join(sorted(filter(None, [config.source_language, config.target_language])))
  if task_of(config) == "lm":
    langs += "_lm"
  elif task_of(config) in ENCODER_TASKS:
    langs += "_enc"
  return os.path.join(os.path.expanduser(config.data_cache_dir), "vocab",
                      f"{name}_{langs}_{config.vocab_size}.model")


def load(config, splits=sources.SPLITS) -> TaskData:
  """Loads the configured corpus, trains or loads its vocabulary, tokenizes the splits."""
  task = task_of(config)
  if task == "classification":
    return _load_labelled(config, splits)
  if task in ("lm", "mlm"):
    pairs = {split: [("", text) for text in texts] for split, texts in sources.load_texts(config).items()}
  else:
    pairs = sources.load_pairs(config)
  processor = tokenizer_lib.train_or_load(
    vocab_path(config), [s for pair in pairs["train"] for s in pair if s], config.vocab_size,
    with_mask=task in ENCODER_TASKS)
  train = pipeline.encode_pairs(processor, pairs["train"], config.max_target_length, "train") \
    if "train" in splits else None
  evals = {split: pipeline.encode_pairs(processor, pairs[split], config.max_eval_target_length, split)
           for split in splits if split != "train"}
  return TaskData(processor, pairs, train, evals)


def _load_labelled(config, splits) -> TaskData:
  """Classification data; its vocabulary is trained on the same texts as masked-LM pretraining's."""
  texts = sources.load_labelled(config, unlabelled=True)
  processor = tokenizer_lib.train_or_load(vocab_path(config), [t for t, _ in texts["train"]], config.vocab_size,
                                          with_mask=True)
  pairs = sources.labelled_only(texts, config.dataset)
  train = labelled.encode_labelled(processor, pairs["train"], config.max_target_length, "train") \
    if "train" in splits else None
  evals = {split: labelled.encode_labelled(processor, pairs[split], config.max_eval_target_length, split)
           for split in splits if split != "train"}
  return TaskData(processor, pairs, train, evals)


def train_batches(config, data: TaskData, *, global_rows: int, process_index: int = 0, process_count: int = 1):
  """The endless, resumable training batch iterator of the config's task."""
  kind = labelled.LabelledBatches if task_of(config) == "classification" else pipeline.TrainBatches
  return kind(data.train, global_rows=global_rows, row_length=config.max_target_length, seed=config.seed,
              process_index=process_index, process_count=process_count)


def eval_batches(config, examples, *, global_rows: int, process_index: int = 0, process_count: int = 1,
                 max_batches: int | None = None):
  """Batches over a whole evaluation split of the config's task, in order."""
  make = labelled.eval_batches if task_of(config) == "classification" else pipeline.eval_batches
  return make(examples, global_rows=global_rows, row_length=config.max_eval_target_length,
              process_index=process_index, process_count=process_count, max_batches=max_batches)
