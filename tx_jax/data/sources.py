"""Parallel-text sources chosen by `config.dataset`, returned as (source, target) pairs per split."""

import importlib
import os

from absl import logging

from tx_jax import errors

SPLITS = ("train", "validation", "test")
DATASETS = ("libreoffice_help", "text_files", "tfds")

# TFDS registers some builders only when their module is imported (e.g. without TensorFlow installed).
_TFDS_MODULES = {"wmt14_translate": "tensorflow_datasets.translate.wmt14",
                 "wmt17_translate": "tensorflow_datasets.translate.wmt17",
                 "wmt19_translate": "tensorflow_datasets.translate.wmt19"}


def load_tfds_translation(name: str, source_language: str, target_language: str,
                          data_dir: str | None, splits=SPLITS) -> dict:
  """Reads a prepared TFDS translation dataset (array_record format) without TensorFlow."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  module = _TFDS_MODULES.get(name.split("/")[0])
  if module:
    importlib.import_module(module)
  out = {}
  for split in splits:
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # TFDS raises several types for "not prepared"
      raise errors.DataError(
        f"TFDS dataset {name!r} split {split!r} is not prepared in "
        f"{data_dir or '~/tensorflow_datasets'} ({type(e).__name__}). Prepare it once on a machine "
        f"with internet: pip install 'tx_jax[tfds]' && tfds build {name} --file_format=array_record "
        f"--data_dir=DIR, then pass --config.tfds_data_dir=DIR; or use --config.dataset=text_files "
        f"with --config.data_dir pointing at plain parallel text files.") from None
    out[split] = [(_text(ex[source_language]), _text(ex[target_language])) for ex in source]
    logging.info("TFDS %s %s: %d pairs", name, split, len(out[split]))
  return out


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_pairs(config) -> dict:
  """(source, target) string pairs for train/validation/test, in the configured direction."""
  src, tgt = config.source_language, config.target_language
  if config.dataset == "libreoffice_help":
    from tx_jax.data import libreoffice  # pylint: disable=g-import-not-at-top

    other = tgt if src == "en" else src
    if "en" not in (src, tgt):
      raise errors.ConfigError("config.dataset='libreoffice_help' pairs English with another language; "
                               f"set config.source_language or config.target_language to 'en' (got {src}->{tgt}).")
    pairs = libreoffice.load_libreoffice_help(
      os.path.expanduser(config.data_cache_dir), language=other,
      extracted_dir=config.get("libreoffice_dir") or None)
    if src != "en":
      pairs = {k: [(b, a) for a, b in v] for k, v in pairs.items()}
    return pairs
  if config.dataset == "text_files":
    from tx_jax.data import text_files  # pylint: disable=g-import-not-at-top

    if not config.get("data_dir"):
      raise errors.ConfigError("config.dataset='text_files' needs config.data_dir, a directory with "
                               f"train.{src}, train.{tgt}, validation.*, test.* (one sentence per line).")
    return text_files.load_text_files(os.path.expanduser(config.data_dir), src, tgt)
  if config.dataset == "tfds":
    return load_tfds_translation(config.tfds_name, src, tgt, config.get("tfds_data_dir") or None)
  raise errors.ConfigError(f"config.dataset={config.dataset!r} is unknown; use one of {DATASETS}.")


def load_texts(config) -> dict:
  """Monolingual text per split for language modelling, in `config.target_language`."""
  lang = config.target_language
  if config.dataset == "libreoffice_help":
    from tx_jax.data import libreoffice  # pylint: disable=g-import-not-at-top

    other = config.get("libreoffice_pair_language") or "de"
    pairs = libreoffice.load_libreoffice_help(
      os.path.expanduser(config.data_cache_dir), language=other if lang == "en" else lang,
      extracted_dir=config.get("libreoffice_dir") or None)
    side = 0 if lang == "en" else 1
    return {split: list(dict.fromkeys(p[side] for p in v)) for split, v in pairs.items()}  # dedupe, keep order
  if config.dataset == "text_files":
    from tx_jax.data import text_files  # pylint: disable=g-import-not-at-top

    out = {}
    for split in SPLITS:
      path = os.path.join(os.path.expanduser(config.data_dir), f"{split}.{lang}")
      if not os.path.exists(path):
        raise errors.DataError(f"{path} is missing: language modelling with config.dataset='text_files' reads "
                               f"DIR/{{train,validation,test}}.{lang}, one text per line.")
      out[split] = [line for line in text_files.read_lines(path) if line]
    return out
  raise errors.ConfigError(f"config.dataset={config.dataset!r} has no language-modelling reader; use "
                           "'libreoffice_help' or 'text_files'.")
