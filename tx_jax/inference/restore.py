"""Parameter-only restore of trained workdirs for inference: one model, or several as an ensemble."""

from tx_jax import compilation_cache, errors, parallel, tasks
from tx_jax.training import experiment


def restore_for_inference(workdir: str, step: int | None = None, use_ema: bool = True, dtype: str | None = None):
  """(config, graphdef, params, tokenizer) of a trained workdir, on this process's devices.

  `dtype` (e.g. "bfloat16"): the compute dtype of the model to decode with, instead of the run's
  config.dtype; the parameters stay float32 (decode.with_decoding_weights stores the matrices in it).

  The params are the run's EMA when it keeps one (config.ema_decay > 0) and `use_ema`, else the raw
  ones, read alone: no optimizer state is made and no Adam moment read (the EMA lives in the
  optimizer-state item, and an EMA restore reads just that sub-tree of it).
  """
  config = experiment.workdir_config(workdir)
  if dtype is not None:
    config.dtype = dtype
  compilation_cache.enable(config)
  mesh = parallel.make_mesh((-1, 1, 1))
  tokenizer = tasks.get(config).tokenizer(config)
  graphdef, params, _ = experiment.restore_model(workdir, config, mesh, step, use_ema)
  return config, graphdef, params, tokenizer


def restore_ensemble(workdirs, step: int | None = None, use_ema: bool = True, dtype: str | None = None):
  """(config of the first, graphdefs, params, tokenizer) of one or more workdirs sharing a vocabulary.

  One workdir gives a plain (graphdef, params); several give tuples, which tx_jax.inference.decode decodes
  as an ensemble. `step` applies to a single workdir only (an ensemble uses each run's newest); `dtype`
  as in restore_for_inference. Workdirs whose vocabularies differ stop with one message naming them.
  """
  workdirs = list(workdirs)
  if len(workdirs) == 1:
    return restore_for_inference(workdirs[0], step, use_ema, dtype)
  if step is not None:
    raise errors.ConfigError("--step picks a checkpoint of one workdir; an ensemble uses each workdir's newest "
                             "(average or copy checkpoints into workdirs of their own to ensemble others).")
  members = [restore_for_inference(w, None, use_ema, dtype) for w in workdirs]
  first_config, first_vocab = members[0][0], members[0][3].fingerprint()
  for w, (config, _, _, processor) in zip(workdirs[1:], members[1:]):
    if processor.fingerprint() != first_vocab:
      raise errors.ConfigError(f"{w} uses another vocabulary than {workdirs[0]} ({config.vocab_path} against "
                               f"{first_config.vocab_path}); an ensemble's models must share one.")
    if tasks.get(config).family != tasks.get(first_config).family:
      raise errors.ConfigError(f"{w} holds a {tasks.get(config).family} model and {workdirs[0]} a "
                               f"{tasks.get(first_config).family} one; an ensemble needs one kind.")
  return first_config, tuple(m[1] for m in members), tuple(m[2] for m in members), members[0][3]
