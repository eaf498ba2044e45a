"""Initialise a run from another run's checkpoint: e.g. a classifier from its masked-LM pretraining."""

import dataclasses
import os

import jax
import ml_collections
from absl import logging

from tx_jax import configuration, errors, parallel, tasks
from tx_jax.data import hf_tokenizers
from tx_jax.models import config as model_config
from tx_jax.training import experiment, run_vocab
from tx_jax.training import step as step_lib


def _key(path) -> str:
  return "/".join(map(str, step_lib.path_names(path)))


# ModelConfig fields a run keeps as its own when it starts from another: regularisation, how the model is
# computed (none of them changes a parameter's shape), the labels of its own data, and pad_id, which comes
# with the vocabulary (with_source_vocabulary).
RUN_MODEL_FIELDS = ("dropout_rate", "attention_dropout_rate", "dtype", "remat", "remat_policy", "scan_layers",
                    "attention_impl", "num_classes", "pad_id")
# The task's head: the source's when the run trains the source's task, else the run's own (a new head). The
# output bias is the MLM head's in an encoder (a classifier has none, so an MLM source's would not export).
HEAD_FIELDS = ("pooler", "mlm_head", "output_bias")
# The classification head maps onto the run's own labels: over another number of classes it starts afresh.
LABEL_HEAD = "classifier"
STRUCTURE_FIELDS = tuple(f.name for f in dataclasses.fields(model_config.ModelConfig)
                         if f.name not in RUN_MODEL_FIELDS + HEAD_FIELDS)


def with_source(config, run_workdir: str | None = None) -> ml_collections.ConfigDict:
  """`config` with what its init_from workdir fixes: the model's structure and the vocabulary it recorded.

  A resumed run (`run_workdir`, holding its own config.json) whose init_from workdir has since been
  deleted or moved takes the model fields its own config.json recorded from it; its vocabulary is
  its own record's (run_vocab.with_recorded), never taken from the source again.
  """
  config = with_source_model(config, run_workdir)
  return config if _has_config(run_workdir) else with_source_vocabulary(config)


def source_model_fields(config, source) -> dict:
  """The model fields of `source` (a workdir's config) that a run of `config` initialised from it takes."""
  names = STRUCTURE_FIELDS + (HEAD_FIELDS if tasks.get(source) is tasks.get(config) else ())
  return {name: source[name] for name in names if name in source}  # every tx_jax workdir records them all


def _has_config(workdir: str | None) -> bool:
  return bool(workdir) and os.path.exists(os.path.join(os.path.expanduser(workdir), "config.json"))


def with_source_model(config, run_workdir: str | None = None) -> ml_collections.ConfigDict:
  """`config` with the model structure (ModelConfig fields) of its init_from workdir, when that has a config.json.

  The training fields (learning rate, dropout, steps, task, data, batch size, ...) stay the config's;
  one log line names the model fields taken that differ. A source of another model family, or a
  checkpoint directory without config.json, leaves the config as it is; a resumed run (`run_workdir`
  with a config.json) whose source is gone takes them from its own config.json.
  """
  if not config.get("init_from"):
    return config
  source_dir = config.init_from
  if not _has_config(source_dir) and not os.path.exists(os.path.expanduser(source_dir)) and _has_config(run_workdir):
    logging.warning("config.init_from=%s is gone; this resumed run takes the model fields its own %s/config.json "
                    "recorded from it.", source_dir, run_workdir)
    source_dir = run_workdir
  if not _has_config(source_dir):
    return config
  source = experiment.workdir_config(source_dir)
  if tasks.get(source).family != tasks.get(config).family:
    logging.info("config.init_from=%s holds a %s model; this %s run keeps its own model fields.", config.init_from,
                 tasks.get(source).family, tasks.get(config).family)
    return config
  taken = source_model_fields(config, source)
  changed = {k: v for k, v in taken.items() if config.get(k) != v}
  if not changed:
    return config
  if not (run_workdir and run_vocab.recorded(run_workdir)):  # else its vocabulary is its record's (with_recorded)
    _check_own_vocabulary(config, source, changed)
  logging.info("The model of config.init_from=%s replaces these config fields: %s", config.init_from,
               ", ".join(f"{k}={v!r} (was {config.get(k)!r})" for k, v in changed.items()))
  adopted = ml_collections.ConfigDict(dict(config.to_dict(), **changed))
  try:
    configuration.validate(adopted)
  except errors.ConfigError as e:
    raise errors.ConfigError(f"{e} (with the model fields of config.init_from={config.init_from!r})") from None
  return adopted


def _check_own_vocabulary(config, source, changed: dict):
  """ConfigError when the run names a vocabulary of another size than the source model's embeddings index."""
  if ("vocab_size" in changed and config.get("vocab_path")
      and not run_vocab.same(config.vocab_path, source.get("vocab_path") or "")):
    raise errors.ConfigError(
      f"config.vocab_path={config.vocab_path!r} (vocab_size={config.get('vocab_size')}) is not the vocabulary of "
      f"config.init_from={config.init_from!r} (vocab_size={source.vocab_size}), whose embeddings index its own "
      "tokens; leave vocab_path empty (the source's recorded vocabulary comes along) or name the one it trained with.")


def with_source_vocabulary(config) -> ml_collections.ConfigDict:
  """`config`, reading the vocabulary its init_from workdir recorded when the run names none.

  The source's embeddings index that vocabulary's pieces: an imported model's tokenizer, or the
  SentencePiece model a tx_jax run kept (tx_jax.training.run_vocab), of a run of the same model
  family. Its special ids (bos_id, eos_id, pad_id) come along, and the run's config.json records
  them for every tool; a config setting one away from its default to another is one ConfigError.
  A source from before runs kept their vocabulary records none: the run computes its own, as it did.
  """
  if not config.get("init_from") or config.get("vocab_path") or not _has_config(config.init_from):
    return config
  source = experiment.workdir_config(config.init_from)
  vocab = source.get("vocab_path") or ""
  imported = hf_tokenizers.is_tokenizer_dir(vocab)
  if not vocab or not (imported or tasks.get(source).family == tasks.get(config).family):
    return config
  run_vocab.check_special_ids(config, source, f"config.init_from={config.init_from}'s vocabulary",
                              "to take the source's, or name the vocabulary to train with as vocab_path.")
  adopted = ml_collections.ConfigDict(config.to_dict())
  with adopted.unlocked():
    adopted.vocab_path = vocab
    for name in run_vocab.SPECIAL_IDS:
      if source.get(name) is not None:
        adopted[name] = source[name]
  logging.info("Using the %s of config.init_from=%s: %s", "tokenizer" if imported else "vocabulary",
               config.init_from, vocab)
  return adopted


def load_matching_params(workdir: str, params):
  """`params` with every parameter that WORKDIR's newest checkpoint has at the same path copied in.

  Parameters only the new model has (a classification head, a pooler) keep their initial
  values, as does a classification head over another number of classes. A shared parameter
  with another shape (another vocab_size or width) is an error.
  """
  source_config = experiment.workdir_config(workdir)
  # The parameters alone, not the optimizer state: the source's EMA when it keeps one, as its evaluations scored.
  _, source, _ = experiment.restore_model(workdir, source_config, parallel.make_mesh((-1, 1, 1)))
  source = {_key(p): v for p, v in jax.tree_util.tree_leaves_with_path(source)}
  copied, kept, relabelled = [], [], []

  def take(path, value):
    key = _key(path)
    if key not in source:
      kept.append(key)
      return value
    if source[key].shape != value.shape and key.split("/")[0] == LABEL_HEAD:
      relabelled.append(key)
      return value
    if source[key].shape != value.shape:
      raise errors.ConfigError(
        f"config.init_from={workdir!r}: parameter {key} has shape {source[key].shape} there but "
        f"{value.shape} here; the pretrained run must use the same vocab_size, emb_dim, mlp_dim and heads.")
    copied.append(key)
    return jax.device_put(source[key], value.sharding).astype(value.dtype)

  params = jax.tree_util.tree_map_with_path(take, params)
  if not copied:
    raise errors.ConfigError(f"config.init_from={workdir!r} shares no parameter with this model; "
                             "is it a run of the same model family?")
  if relabelled:
    logging.info("config.init_from=%s classifies into num_classes=%s, not this run's: its classification head "
                 "starts afresh.", workdir, source_config.get("num_classes"))
  logging.info("Initialised %d parameters from %s; %d new: %s", len(copied), workdir, len(kept + relabelled),
               kept + relabelled)
  return params
