"""The vocabulary a run trains with, kept in its workdir: WORKDIR/vocab.model, or WORKDIR/tokenizer/ when imported.

A run's config.json names that copy as its vocab_path, so every tool, the run resumed and a run
initialised from it (config.init_from) read the vocabulary it trained with, not one recomputed
from a corpus and a data cache that may since have changed, or be on another machine. A run
started before tx_jax kept it (config.json with an empty vocab_path) computes it from its config,
as it did.
"""

import filecmp
import json
import os
import shutil

import ml_collections
from absl import logging

from tx_jax import defaults, errors
from tx_jax.data import hf_tokenizers

SENTENCEPIECE_NAME = "vocab.model"  # tx_jax's own vocabulary, or any SentencePiece model a run names
TOKENIZER_DIR_NAME = "tokenizer"  # an imported model's tokenizer files, the directory tx_jax.import_hf writes
SPECIAL_IDS = ("bos_id", "eos_id", "pad_id")  # come with a vocabulary (an imported one's differ from tx_jax's)


def _name_in_workdir(path: str) -> str:
  return TOKENIZER_DIR_NAME if hf_tokenizers.is_tokenizer_dir(path) else SENTENCEPIECE_NAME


def keep(path: str, workdir: str) -> str:
  """Copies the vocabulary at `path` (a file or tokenizer directory) into WORKDIR; returns its name there."""
  workdir, path = os.path.abspath(os.path.expanduser(workdir)), os.path.abspath(os.path.expanduser(path))
  name = _name_in_workdir(path)
  if path == os.path.join(workdir, name):  # there already (a resumed run's copy, an imported model's tokenizer/)
    return name
  target, partial = os.path.join(workdir, name), os.path.join(workdir, name + ".partial")
  if os.path.isdir(path):
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(path, partial)
    shutil.rmtree(target, ignore_errors=True)
  else:
    shutil.copyfile(path, partial)
  os.replace(partial, target)  # a copy cut short is never read as the vocabulary
  return name


def copy_kept(workdir: str, out: str):
  """Copies the vocabulary kept in WORKDIR, if any, into OUT (a workdir made from it with its config.json)."""
  for name in (SENTENCEPIECE_NAME, TOKENIZER_DIR_NAME):
    if os.path.exists(os.path.join(workdir, name)):
      keep(os.path.join(workdir, name), out)


def same(a: str, b: str) -> bool:
  """Whether two vocabulary paths (SentencePiece files or tokenizer directories) hold the same vocabulary."""
  if not (isinstance(a, str) and isinstance(b, str) and a and b):
    return False
  a, b = (os.path.realpath(os.path.expanduser(p)) for p in (a, b))
  if a == b:
    return True
  try:
    if os.path.isfile(a) and os.path.isfile(b):
      return filecmp.cmp(a, b, shallow=False)
    if os.path.isdir(a) and os.path.isdir(b):
      names = sorted(os.listdir(a))
      if names != sorted(os.listdir(b)):
        return False
      _, mismatch, unreadable = filecmp.cmpfiles(a, b, names, shallow=False)
      return not mismatch and not unreadable
  except OSError:  # unreadable: not known to be the same
    return False
  return False


def resolve(workdir: str, vocab: str) -> str:
  """A config.json's vocab_path made absolute when it names a file or directory in WORKDIR (the run's copy)."""
  if not vocab or os.path.isabs(vocab):
    return vocab
  inside = os.path.abspath(os.path.join(os.path.expanduser(workdir), vocab))
  if os.path.exists(inside) or vocab in (SENTENCEPIECE_NAME, TOKENIZER_DIR_NAME):
    return inside  # a missing copy is named where it is read
  return vocab  # as the user named it, relative to where the run started


def recorded(workdir: str) -> dict:
  """The vocabulary WORKDIR's config.json names, as {"vocab_path" (in WORKDIR made absolute), special ids it has}.

  Empty when it names none (a run from before runs kept their vocabulary, or no config.json).
  """
  path = os.path.join(os.path.expanduser(workdir), "config.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    run = json.load(f)
  if not run.get("vocab_path"):
    return {}
  return {"vocab_path": resolve(workdir, run["vocab_path"]),
          **{k: run[k] for k in SPECIAL_IDS if run.get(k) is not None}}


def check_special_ids(config, ids: dict, whose: str, remedy: str):
  """ConfigError when `config` sets a special id of `ids` (a vocabulary's) away from tx_jax's default to another.

  `whose` names the vocabulary in the message ("the vocabulary the run in W trained with"), `remedy` ends it. A
  value equal to the default cannot be told from a config that leaves it alone: `ids` win.
  """
  default_ids = {k: v for k, v in defaults.get_config().items() if k in SPECIAL_IDS}
  for name in SPECIAL_IDS:
    mine = config.get(name)
    if ids.get(name) is not None and mine is not None and mine != ids[name] and mine != default_ids.get(name):
      raise errors.ConfigError(f"config.{name}={mine} is not the id of {whose} ({ids[name]}); leave {name} at its "
                               f"default {remedy}")


def with_recorded(config, workdir: str) -> ml_collections.ConfigDict:
  """`config` reading the vocabulary, and its special ids, that the run it resumes in WORKDIR recorded.

  A config.vocab_path naming another vocabulary is one ConfigError: the run's embeddings index
  the recorded one's pieces. One that no longer exists (a cleaned cache) gives way to the record.
  A special id set away from its default to another than the recorded is one ConfigError too.
  """
  record = recorded(workdir)
  if not record:
    return config  # a run from before tx_jax kept it: computed from the config, as it was
  vocab, given = record["vocab_path"], config.get("vocab_path")
  if not os.path.exists(vocab):
    where = ("copy it along with config.json and checkpoints/" if os.path.dirname(vocab) == os.path.abspath(
      os.path.expanduser(workdir)) else "the run trained with it")
    raise errors.DataError(f"{vocab} is missing: {workdir}'s config.json names it as the run's vocabulary; restore "
                           f"it ({where}): the model's embeddings index its pieces.")
  if given and not os.path.exists(os.path.expanduser(given)):
    logging.warning("config.vocab_path=%s is gone; the run resumes with its own copy %s.", given, vocab)
  elif given and not same(given, vocab):
    raise errors.ConfigError(f"config.vocab_path={given!r} is not the vocabulary that the run in {workdir} trained "
                             f"with ({vocab}); leave vocab_path empty to resume it, or pass a new --workdir.")
  check_special_ids(config, record, f"the vocabulary the run in {workdir} trained with",
                    "to resume it, or pass a new --workdir.")
  adopted = ml_collections.ConfigDict(config.to_dict())
  with adopted.unlocked():
    adopted.update(record)
  return adopted
