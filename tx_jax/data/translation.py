"""Translation data as the trainer sees it: raw pairs, the shared vocabulary, tokenized splits."""

import dataclasses
import os

from tx_jax.data import pipeline
from tx_jax.data import sources
from tx_jax.data import tokenizer as tokenizer_lib


@dataclasses.dataclass
class TranslationData:
  """Everything a translation run reads: the tokenizer and each split, raw and tokenized."""

  processor: object  # sentencepiece.SentencePieceProcessor
  pairs: dict  # split -> list of (source, target) strings
  train: pipeline.Examples
  eval: dict  # split -> pipeline.Examples, pairs longer than max_eval_target_length dropped


def vocab_path(config) -> str:
  """Where the shared SentencePiece model of this dataset and vocabulary size is cached."""
  if config.get("vocab_path"):
    return os.path.expanduser(config.vocab_path)
  name = config.tfds_name.replace("/", "_") if config.dataset == "tfds" else config.dataset
  langs = "-".join(sorted([config.source_language, config.target_language]))
  return os.path.join(os.path.expanduser(config.data_cache_dir), "vocab",
                      f"{name}_{langs}_{config.vocab_size}.model")


def load_translation_data(config, splits=sources.SPLITS) -> TranslationData:
  """Loads the configured corpus, trains or loads its vocabulary, tokenizes the splits."""
  pairs = sources.load_pairs(config)
  processor = tokenizer_lib.train_or_load(
    vocab_path(config), [s for pair in pairs["train"] for s in pair], config.vocab_size)
  train = pipeline.encode_pairs(processor, pairs["train"], config.max_target_length, "train") \
    if "train" in splits else None
  evals = {split: pipeline.encode_pairs(processor, pairs[split], config.max_eval_target_length, split)
           for split in splits if split != "train"}
  return TranslationData(processor, pairs, train, evals)
