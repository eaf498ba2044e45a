"""Initialise a run from another run's checkpoint: e.g. a classifier from its masked-LM pretraining."""

import jax
import ml_collections
from absl import logging

from tx_jax import errors, parallel
from tx_jax.data import hf_tokenizers
from tx_jax.models import registry
from tx_jax.training import checkpoint, experiment
from tx_jax.training import step as step_lib


def _key(path) -> str:
  return "/".join(map(str, step_lib.path_names(path)))


def with_source_tokenizer(config) -> ml_collections.ConfigDict:
  """`config`, reading the tokenizer of its init_from workdir when that is an imported model's and it names none.

  An imported model only makes sense with its own vocabulary: its vocab_path and special ids
  (bos_id, eos_id, pad_id) come along, so the run's config.json records them for every tool.
  """
  if not config.get("init_from") or config.get("vocab_path"):
    return config
  source = experiment.workdir_config(config.init_from)
  if not hf_tokenizers.is_tokenizer_dir(source.get("vocab_path", "")):
    return config
  adopted = ml_collections.ConfigDict(config.to_dict())
  with adopted.unlocked():
    adopted.vocab_path = source.vocab_path
    for name in ("bos_id", "eos_id", "pad_id"):
      if source.get(name) is not None:
        adopted[name] = source[name]
  logging.info("Using the tokenizer of config.init_from=%s: %s", config.init_from, source.vocab_path)
  return adopted


def load_matching_params(workdir: str, params):
  """`params` with every parameter that WORKDIR's newest checkpoint has at the same path copied in.

  Parameters only the new model has (a classification head, a pooler) keep their initial
  values. A shared parameter with another shape (another vocab_size or width) is an error.
  """
  source_config = experiment.workdir_config(workdir)
  _, abstract = step_lib.abstract_params(lambda rngs: registry.build_model(source_config, rngs),
                                         source_config.get("seed", 0), parallel.make_mesh((-1, 1, 1)))
  source, _ = checkpoint.restore_params(workdir, abstract)  # the parameters alone, not the optimizer state
  source = {_key(p): v for p, v in jax.tree_util.tree_leaves_with_path(source)}
  copied, kept = [], []

  def take(path, value):
    key = _key(path)
    if key not in source:
      kept.append(key)
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
  logging.info("Initialised %d parameters from %s; %d new: %s", len(copied), workdir, len(kept), kept)
  return params
