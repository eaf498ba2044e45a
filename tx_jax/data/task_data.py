"""Data as the trainer sees it: raw pairs, the vocabulary, tokenized splits (translation or LM)."""

import dataclasses
import os

from tx_jax.data import pipeline
from tx_jax.data import sources
from tx_jax.data import tokenizer as tokenizer_lib


@dataclasses.dataclass
class TranslationData:
  """Everything a run reads: the tokenizer and each split, raw and tokenized.

  Language modelling uses the same structure with pairs ("", text).
  """

  processor: object  # sentencepiece.SentencePieceProcessor
  pairs: dict  # split -> list of (source, target) strings
  train: pipeline.Examples
  eval: dict  # split -> pipeline.Examples, pairs longer than max_eval_target_length dropped


def vocab_path(config) -> str:
  """Where the shared SentencePiece model of this dataset and vocabulary size is cached."""
  if config.get("vocab_path"):
    return os.path.expanduser(config.vocab_path)
  name = config.tfds_name.replace("/", "_") if config.dataset == "tfds" else config.dataset
  langs = "-".join(sorted(filter(None, [config.source_language, config.target_language])))
  if config.get("task", "translation") == "lm":
    langs += "_lm"
  return os.path.join(os.path.expanduser(config.data_cache_dir), "vocab",
                      f"{name}_{langs}_{config.vocab_size}.model")


def load(config, splits=sources.SPLITS) -> TranslationData:
  """Loads the configured corpus, trains or loads its vocabulary, tokenizes the splits."""
  if config.get("task", "translation") == "lm":
    pairs = {split: [("", text) for text in texts] for split, texts in sources.load_texts(config).items()}
  else:
    pairs = sources.load_pairs(config)
  processor = tokenizer_lib.train_or_load(
    vocab_path(config), [s for pair in pairs["train"] for s in pair if s], config.vocab_size)
  train = pipeline.encode_pairs(processor, pairs["train"], config.max_target_length, "train") \
    if "train" in splits else None
  evals = {split: pipeline.encode_pairs(processor, pairs[split], config.max_eval_target_length, split)
           for split in splits if split != "train"}
  return TranslationData(processor, pairs, train, evals)
