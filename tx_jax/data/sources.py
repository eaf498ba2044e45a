"""Text sources chosen by `config.dataset`: (source, target) pairs, or texts for LMs, per split."""

import importlib
import os

from absl import logging

from tx_jax import errors

SPLITS = ("train", "validation", "test")
DATASETS = ("libreoffice_help", "text_files", "tfds", "rotten_tomatoes")

# TFDS registers some builders only when their module is imported (e.g. without TensorFlow installed).
_TFDS_MODULES = {"lm1b": "tensorflow_datasets.text.lm1b",
                 "wmt14_translate": "tensorflow_datasets.translate.wmt14",
                 "wmt17_translate": "tensorflow_datasets.translate.wmt17",
                 "wmt19_translate": "tensorflow_datasets.translate.wmt19",
                 "glue": "tensorflow_datasets.text.glue"}


def tfds_examples(name: str, split: str, data_dir: str | None):
  """The examples of one split of a prepared TFDS dataset (array_record format), read without TensorFlow.

  `split` may be a TFDS slice such as "test[:50%]".
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  module = _TFDS_MODULES.get(name.split("/")[0])
  if module:
    importlib.import_module(module)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir)
  except Exception as e:  # TFDS raises several types for "not prepared"
    raise errors.DataError(
      f"TFDS dataset {name!r} split {split!r} is not prepared in "
      f"{data_dir or '~/tensorflow_datasets'} ({type(e).__name__}). Prepare it once on a machine "
      f"with internet: pip install 'tx_jax[tfds]' && tfds build {name} --file_format=array_record "
      f"--data_dir=DIR, then pass --config.tfds_data_dir=DIR; or use --config.dataset=text_files "
      f"with --config.data_dir pointing at plain text files.") from None


def tfds_split_names(config) -> dict:
  """Our split -> the TFDS split read for it (datasets without a validation split slice another)."""
  return {split: config.get(f"tfds_{split}_split") or split for split in SPLITS}


def load_tfds_translation(config) -> dict:
  """(source, target) pairs of a prepared TFDS translation dataset."""
  out = {}
  for split, tfds_split in tfds_split_names(config).items():
    examples = tfds_examples(config.tfds_name, tfds_split, config.get("tfds_data_dir") or None)
    out[split] = [(_text(ex[config.source_language]), _text(ex[config.target_language])) for ex in examples]
    logging.info("TFDS %s %s: %d pairs", config.tfds_name, tfds_split, len(out[split]))
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
    return load_tfds_translation(config)
  raise errors.ConfigError(f"config.dataset={config.dataset!r} is unknown; use one of {DATASETS}.")


def load_texts(config) -> dict:
  """Monolingual text per split for language modelling, in `config.target_language`."""
  lang = config.target_language
  if config.dataset == "rotten_tomatoes":  # every snippet and plot summary, labels ignored
    return {split: [text for text, _ in items] for split, items in load_labelled(config, unlabelled=True).items()}
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
  if config.dataset == "tfds":
    key = config.get("tfds_text_key") or "text"
    out = {}
    for split, tfds_split in tfds_split_names(config).items():
      out[split] = [_text(ex[key]) for ex in tfds_examples(config.tfds_name, tfds_split,
                                                           config.get("tfds_data_dir") or None)]
      logging.info("TFDS %s %s: %d texts", config.tfds_name, tfds_split, len(out[split]))
    return out
  raise errors.ConfigError(f"config.dataset={config.dataset!r} is unknown; use one of {DATASETS}.")


def load_labelled(config, unlabelled: bool = False) -> dict:
  """(text, label) items per split for classification; with `unlabelled`, also label -1 texts."""
  if config.dataset == "rotten_tomatoes":
    from tx_jax.data import rotten_tomatoes  # pylint: disable=g-import-not-at-top

    out = rotten_tomatoes.load_rotten_tomatoes(config.data_cache_dir)
  elif config.dataset == "tfds":
    text_key, label_key = config.get("tfds_text_key") or "sentence", config.get("tfds_label_key") or "label"
    out = {}
    for split, tfds_split in tfds_split_names(config).items():
      examples = tfds_examples(config.tfds_name, tfds_split, config.get("tfds_data_dir") or None)
      out[split] = [(_text(ex[text_key]), int(ex[label_key])) for ex in examples]
      logging.info("TFDS %s %s: %d labelled texts", config.tfds_name, tfds_split, len(out[split]))
  else:
    raise errors.ConfigError(f"config.dataset={config.dataset!r} has no labels; classification reads "
                             "'rotten_tomatoes' or a labelled 'tfds' dataset (e.g. glue/sst2).")
  return out if unlabelled else labelled_only(out, config.dataset)


def labelled_only(items_by_split: dict, dataset: str) -> dict:
  """Drops unlabelled (-1) items, failing clearly on a split left empty."""
  out = {split: [(t, l) for t, l in items if l >= 0] for split, items in items_by_split.items()}
  for split, items in out.items():
    if not items:
      raise errors.DataError(f"config.dataset={dataset!r} split {split!r} has no labelled examples "
                             "(GLUE test splits are unlabelled: read another split with config.tfds_test_split).")
  return out
