"""Corpus readers chosen by `config.dataset`: each split as a random-access grain.MapDataset of records.

Records are plain dicts, the same for every corpus of a kind:
  pairs    {"source": str, "target": str}  (translation, in the configured direction)
  texts    {"text": str}                   (language modelling, masked-LM pretraining)
  labelled {"text": str, "label": int}     (classification; label >= 0)
Corpora we prepare (LibreOffice help, text files, Rotten Tomatoes) are converted once into
ArrayRecord shards in the data cache (tx_jax.data.records); prepared TFDS datasets are read
with tfds.data_source. Nothing reads a whole corpus into memory. Adding a corpus is one Reader
subclass and one entry in READERS.
"""

import functools
import importlib
import os

import grain
from absl import logging

from tx_jax import errors
from tx_jax.data import records as records_lib
from tx_jax.data import text_files

SPLITS = ("train", "validation", "test")

# TFDS registers some builders only when their module is imported (e.g. without TensorFlow installed).
_TFDS_MODULES = {"lm1b": "tensorflow_datasets.text.lm1b",
                 "wmt14_translate": "tensorflow_datasets.translate.wmt14",
                 "wmt17_translate": "tensorflow_datasets.translate.wmt17",
                 "wmt19_translate": "tensorflow_datasets.translate.wmt19",
                 "glue": "tensorflow_datasets.text.glue"}


def _languages(config) -> str:
  """'de-en': the config's languages, sorted."""
  return "-".join(sorted(filter(None, [config.get("source_language"), config.get("target_language")])))


def _cache(config) -> str:
  return os.path.expanduser(config.data_cache_dir)


def _dataset(prepared: records_lib.JsonRecords, fn=None) -> grain.MapDataset:
  """A prepared split as a MapDataset (records mapped by `fn`), carrying the split's stats."""
  ds = grain.MapDataset.source(prepared)
  ds = ds.map(fn) if fn else ds
  ds.prepared_stats = prepared.stats  # {"records": n, "skipped": {reason: count}}
  return ds


def _pick(record: dict, source: str, target: str) -> dict:
  """{"source", "target"} of a record keyed by language."""
  return {"source": record[source], "target": record[target]}


def _parallel_records(paths, keys):
  """(records keyed by `keys` from parallel text files, skipped-line counts filled as they are read)."""
  skipped = {}
  lines = text_files.read_parallel_lines(paths, skipped)
  return ({k: line for k, line in zip(keys, group)} for group in lines), skipped


def _unique_texts(paths, key="text"):
  """(records of the distinct lines of one text file, in order; skipped-line counts)."""
  records, skipped = _parallel_records(paths, (key,))

  def unique():
    seen = set()
    for record in records:
      h = hash(record[key])
      if h not in seen:  # a hash collision drops one text in ~1e19: cheaper than keeping the strings
        seen.add(h)
        yield record
  return unique(), skipped


class Reader:
  """One corpus: its splits as pairs, texts or labelled records (see the module doc)."""

  name = ""

  def pairs(self, config, split: str) -> grain.MapDataset:
    """(source, target) records of `split` in the configured direction."""
    raise errors.ConfigError(f"config.dataset={self.name!r} has no sentence pairs for translation; use "
                             "libreoffice_help, text_files or a tfds translation dataset.")

  def texts(self, config, split: str) -> grain.MapDataset:
    """Monolingual text records of `split`."""
    raise errors.ConfigError(f"config.dataset={self.name!r} has no monolingual texts.")

  def labelled(self, config, split: str) -> grain.MapDataset:
    """(text, label >= 0) records of `split`."""
    raise errors.ConfigError(f"config.dataset={self.name!r} has no labels; classification reads "
                             "'rotten_tomatoes' or a labelled 'tfds' dataset (e.g. glue/sst2).")

  def stats(self, config, kind: str, split: str) -> dict:
    """{"records": n, "skipped": {reason: lines}} of a split (skipped lines are counted when it is prepared)."""
    ds = getattr(self, kind)(config, split)
    return dict(getattr(ds, "prepared_stats", None) or {"records": len(ds), "skipped": {}})

  def vocab_records(self, config, kind: str) -> grain.MapDataset:
    """The training records a vocabulary for records of `kind` is trained on."""
    return getattr(self, kind)(config, "train")

  def vocab_key(self, config, kind: str) -> str:
    """A file-name key of the corpus a vocabulary of records of `kind` (pairs|texts|labelled) is trained on."""
    return f"{self.name}_{_languages(config)}"


class LibreOfficeHelp(Reader):
  """English <-> X LibreOffice help paragraphs, fetched through apt-get (tx_jax.data.libreoffice)."""

  name = "libreoffice_help"

  def _aligned(self, config, other: str) -> str:
    from tx_jax.data import libreoffice  # pylint: disable=g-import-not-at-top
    extracted = config.get("libreoffice_dir")  # ~ after --config.libreoffice_dir= is not expanded by the shell
    return libreoffice.aligned_dir(_cache(config), other, extracted_dir=os.path.expanduser(extracted) if extracted
                                   else None)

  @staticmethod
  def _layout(directory: str, languages) -> str:
    return (f"{directory}/{{train,validation,test}}.{{{','.join(languages)}}}, as tx_jax aligns them (delete "
            f"{directory} to have it rebuilt)")

  def pairs(self, config, split):
    src, tgt = config.source_language, config.target_language
    if "en" not in (src, tgt):
      raise errors.ConfigError("config.dataset='libreoffice_help' pairs English with another language; "
                               f"set config.source_language or config.target_language to 'en' (got {src}->{tgt}).")
    other = tgt if src == "en" else src
    directory = self._aligned(config, other)
    paths = text_files.split_paths(directory, split, ("en", other))
    text_files.check_files(paths, self._layout(directory, ("en", other)))
    key = f"{self.name}_en-{other}_{text_files.fingerprint(paths)}"  # rebuilt aligned files are new records
    prepared = records_lib.open_split(records_lib.split_dir(_cache(config), key, split),
                                      lambda: _parallel_records(paths, ("en", other)))
    return _dataset(prepared, functools.partial(_pick, source=src, target=tgt))

  def texts(self, config, split):
    lang = config.target_language
    pair = (config.get("libreoffice_pair_language") or "de") if lang == "en" else lang  # the en-X pairs read
    directory = self._aligned(config, pair)
    path = text_files.split_paths(directory, split, (lang,))
    text_files.check_files(path, self._layout(directory, ("en", pair)))
    key = f"{self.name}_en-{pair}_{lang}_texts_{text_files.fingerprint(path)}"
    return _dataset(records_lib.open_split(records_lib.split_dir(_cache(config), key, split),
                                           lambda: _unique_texts(path)))

  def vocab_key(self, config, kind):
    if kind == "texts":  # one language's side: an English and a German LM never share a vocabulary, whatever
      return f"{self.name}_{config.target_language}"  # source_language says (the old key when it is empty)
    return super().vocab_key(config, kind)


class TextFiles(Reader):
  """A user's corpus: DIR/<split>.<language>, one sentence per line (tx_jax.data.text_files)."""

  name = "text_files"

  def _dir(self, config) -> str:
    if not config.get("data_dir"):
      raise errors.ConfigError("config.dataset='text_files' needs config.data_dir, a directory with "
                               f"train.{config.source_language or 'SRC'}, train.{config.target_language}, "
                               "validation.*, test.* (one sentence per line).")
    return os.path.expanduser(config.data_dir)

  def _paths(self, config, split, kind):
    languages = (config.target_language,) if kind == "texts" else (config.source_language, config.target_language)
    paths = text_files.split_paths(self._dir(config), split, languages)
    text_files.check_files(paths, f"{self._dir(config)}/{{train,validation,test}}.{{{','.join(languages)}}}, "
                                  "one sentence per line" + (", line N of each file translating line N of the "
                                                             "other" if kind != "texts" else ""))
    return paths

  def _open(self, config, split, kind, make):
    paths = self._paths(config, split, kind)
    key = f"{self.name}_{text_files.fingerprint(paths)}"  # the files' paths, sizes and times
    return _dataset(records_lib.open_split(records_lib.split_dir(_cache(config), key, split), lambda: make(paths)))

  def pairs(self, config, split):
    return self._open(config, split, "pairs", lambda paths: _parallel_records(paths, ("source", "target")))

  def texts(self, config, split):
    return self._open(config, split, "texts", lambda paths: _parallel_records(paths, ("text",)))

  def vocab_key(self, config, kind):
    return f"{self.name}_{text_files.fingerprint(self._paths(config, 'train', kind))}"


class RottenTomatoes(Reader):
  """Rotten Tomatoes snippets labelled fresh/rotten, plus plot summaries as unlabelled texts."""

  name = "rotten_tomatoes"

  def _open(self, config, split, labelled_only: bool):
    def make():
      from tx_jax.data import rotten_tomatoes  # pylint: disable=g-import-not-at-top
      items = rotten_tomatoes.load_rotten_tomatoes(_cache(config))[split]
      return ({"text": t, "label": l} for t, l in items if l >= 0 or not labelled_only), {}
    key = f"{self.name}_{'labelled' if labelled_only else 'texts'}"
    return _dataset(records_lib.open_split(records_lib.split_dir(_cache(config), key, split), make))

  def texts(self, config, split):  # every snippet and plot summary, labels ignored
    return self._open(config, split, labelled_only=False)

  def labelled(self, config, split):
    return self._open(config, split, labelled_only=True)

  def vocab_records(self, config, kind):  # masked-LM pretraining and classification share one vocabulary
    return self.texts(config, "train")


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


def _text(value) -> str:
  """A TFDS text feature as str (bytes decoded as UTF-8, bad bytes replaced)."""
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _tfds_record(example: dict, fields: dict) -> dict:
  """Our record from a TFDS example: fields maps our key -> the TFDS feature."""
  return {ours: (int(example[theirs]) if ours == "label" else _text(example[theirs]))
          for ours, theirs in fields.items()}


def _labelled_or_none(record: dict):
  return record if record["label"] >= 0 else None


class Tfds(Reader):
  """A prepared TFDS dataset (WMT, LM1B, GLUE), read by index with tfds.data_source."""

  name = "tfds"

  def _open(self, config, split, fields):
    tfds_split = tfds_split_names(config)[split]
    source = tfds_examples(config.tfds_name, tfds_split, config.get("tfds_data_dir") or None)
    logging.info("TFDS %s %s: %d examples", config.tfds_name, tfds_split, len(source))
    return grain.MapDataset.source(source).map(functools.partial(_tfds_record, fields=fields))

  def pairs(self, config, split):
    return self._open(config, split, {"source": config.source_language, "target": config.target_language})

  def texts(self, config, split):
    return self._open(config, split, {"text": config.get("tfds_text_key") or "text"})

  def labelled(self, config, split):
    ds = self._open(config, split, {"text": config.get("tfds_text_key") or "sentence",
                                    "label": config.get("tfds_label_key") or "label"})
    if len(ds) and all(ds[i]["label"] < 0 for i in range(min(len(ds), 100))):
      raise errors.DataError(f"config.dataset='tfds' split {split!r} ({tfds_split_names(config)[split]}) has no "
                             "labelled examples (GLUE test splits are unlabelled: read another split with "
                             "config.tfds_test_split).")
    return ds.filter(_labelled_or_none)

  def vocab_key(self, config, kind):
    return f"{config.tfds_name.replace('/', '_')}_{_languages(config)}"


READERS = {reader.name: reader for reader in (LibreOfficeHelp(), TextFiles(), RottenTomatoes(), Tfds())}


def reader(config) -> Reader:
  """The reader of `config.dataset`."""
  if config.dataset not in READERS:
    raise errors.ConfigError(f"config.dataset={config.dataset!r} is unknown; use one of {tuple(READERS)}.")
  return READERS[config.dataset]
