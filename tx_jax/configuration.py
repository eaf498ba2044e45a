"""Config validation: every bad value fails before any compile, with a message naming the field."""

from tx_jax import errors, tasks
from tx_jax.data import sources
from tx_jax.models.attention import ATTENTION_KERNELS
from tx_jax.models.config import REMAT_POLICIES
from tx_jax.models.registry import FAMILIES

CHOICES = {
  "task": tuple(tasks.REGISTRY),
  "model_family": tuple(FAMILIES),  # optional: when set, it must be the task's
  "dataset": tuple(sources.READERS),
  "positions": ("sinusoidal", "learned", "rope", "none"),
  "norm": ("layernorm", "rmsnorm"),
  "norm_position": ("pre", "post"),
  "activation": ("relu", "gelu", "gelu_exact", "silu", "swiglu"),  # gelu: the tanh form (GPT-2); gelu_exact: erf (BERT)
  "sinusoidal_timescales": ("tensor2tensor", "marian"),
  "schedule": ("rsqrt", "cosine", "constant"),
  "dtype": ("float32", "bfloat16"),
  "prng_impl": ("threefry2x32", "rbg"),
  "parallelism": ("jit", "pmap"),
  "remat_policy": tuple(REMAT_POLICIES),
  "attention_impl": tuple(ATTENTION_KERNELS),
  "best_mode": ("auto", "min", "max"),
}
POSITIVE_INTS = ("vocab_size", "emb_dim", "num_heads", "mlp_dim", "per_device_batch_size", "num_train_steps",
                 "max_target_length", "max_eval_target_length", "max_predict_length", "log_every_steps",
                 "eval_every_steps", "checkpoint_every_steps", "beam_size", "eval_batch_size",
                 "grad_accum_steps", "vocab_sample_sentences", "max_checkpoints_to_keep", "max_len", "keep_best")
# 0 means the default where it is allowed: one data shard per process, no workers, num_heads KV heads, ...
NON_NEGATIVE_INTS = ("data_shards", "early_stopping_patience", "warmup_steps", "num_encoder_layers", "num_decoder_layers",
                     "num_kv_heads", "head_dim", "num_token_types", "num_classes", "pad_id",
                     "seed")
NON_NEGATIVE = ("train_minutes", "weight_decay", "grad_clip_norm", "length_penalty_alpha")
POSITIVE = ("learning_rate", "norm_epsilon", "rope_theta", "logits_scale", "adam_eps")
FRACTIONS = ("ema_decay", "dropout_rate", "attention_dropout_rate", "label_smoothing", "mlm_mask_rate", "adam_b1", "adam_b2",
             "cosine_final_fraction")  # in [0, 1)
BOOLS = ("use_bias", "share_embeddings", "tie_output_embedding", "output_bias", "scale_embeddings", "embedding_norm",
         "pooler", "mlm_head", "remat", "scan_layers", "attention_images", "log_batches", "compilation_cache")
# Evaluation scalars of the sentences decoded during training (config.num_predict_sentences of them).
DECODED_METRICS = ("eval/bleu", "eval/chrf", "eval/ter")
# The stacks each family needs at least one layer in.
FAMILY_LAYERS = {"encoder_decoder": ("num_encoder_layers", "num_decoder_layers"),
                 "decoder_only": ("num_decoder_layers",), "encoder_only": ("num_encoder_layers",)}


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(field, value, why):
  raise errors.ConfigError(f"config.{field}={value!r} {why}")


def validate(config):
  """Raises ConfigError naming the first invalid field of a training config."""
  for field, allowed in CHOICES.items():
    if field in config and config[field] not in allowed:
      _fail(field, config[field], f"is not one of {allowed}.")
  for field in POSITIVE_INTS:
    if field in config and not (_is_int(config[field]) and config[field] > 0):
      _fail(field, config[field], "must be a positive integer.")
  for field in NON_NEGATIVE_INTS:
    if field in config and not (_is_int(config[field]) and config[field] >= 0):
      _fail(field, config[field], "must be a non-negative integer.")
  if "num_predict_sentences" in config and not (_is_int(config.num_predict_sentences)
                                                and config.num_predict_sentences >= -1):
    _fail("num_predict_sentences", config.num_predict_sentences, "must be a number of validation sentences to "
          "decode during training >= 0 (0: none), or -1 for the whole split.")
  if "data_workers" in config and not (_is_int(config.data_workers) and config.data_workers >= -1):
    _fail("data_workers", config.data_workers, "must be a number of worker processes >= 0, or -1 (automatic).")
  for field in NON_NEGATIVE:
    if field in config and not (_is_number(config[field]) and config[field] >= 0):
      _fail(field, config[field], "must be a non-negative number.")
  for field in POSITIVE:
    if field in config and not (_is_number(config[field]) and config[field] > 0):
      _fail(field, config[field], "must be a positive number.")
  for field in FRACTIONS:
    if field in config and not (_is_number(config[field]) and 0.0 <= config[field] < 1.0):
      _fail(field, config[field], "must be in [0, 1).")
  for field in BOOLS:
    if field in config and not isinstance(config[field], bool):
      _fail(field, config[field], "must be True or False.")
  if config.get("final_norm") not in (None, True, False):
    _fail("final_norm", config.final_norm, "must be None (pre-norm stacks only), True or False.")
  if "num_eval_steps" in config and not (_is_int(config.num_eval_steps) and (config.num_eval_steps > 0
                                                                             or config.num_eval_steps == -1)):
    _fail("num_eval_steps", config.num_eval_steps, "must be a positive integer, or -1 for the whole split.")
  profile = tuple(config.get("profile_steps", ()))
  if profile and not (len(profile) == 2 and all(_is_int(s) for s in profile) and 1 <= profile[0] <= profile[1]):
    _fail("profile_steps", profile, "must be () for none, or (first, last) training steps with 1 <= first <= last.")
  best_metric = config.get("best_metric", "")
  if not isinstance(best_metric, str) or best_metric and not best_metric.startswith("eval/"):
    _fail("best_metric", best_metric, 'must name an evaluation scalar such as "eval/bleu" or "eval/loss" '
          '(or be "" for none).')
  if config.get("early_stopping_patience", 0) and not best_metric:
    _fail("early_stopping_patience", config.early_stopping_patience, 'needs config.best_metric (e.g. "eval/loss").')
  task = tasks.get(config)
  if best_metric in DECODED_METRICS and not (tasks.is_translation(config) and config.get("num_predict_sentences")):
    _fail("best_metric", best_metric, "is scored on decoded validation sentences: it needs config.task="
          "'translation' and config.num_predict_sentences other than 0 (-1: the whole split).")
  capacity = config.get("token_capacity", 1.0)
  if not (capacity == "auto" or _is_number(capacity) and 0.0 < capacity <= 1.0):
    _fail("token_capacity", capacity, 'must be in (0, 1] (the share of a device\'s row slots the layers compute on) '
          'or "auto" (the smallest share that holds each batch).')
  if capacity not in (1.0, "auto") and not task.skips_padding:  # "auto" computes the padding of such tasks
    skipping = " and ".join(sorted(name for name, t in tasks.REGISTRY.items() if t.skips_padding))
    _fail("token_capacity", capacity, f"must be 1.0 for config.task={task.name!r}: only {skipping} skip padding.")
  if config.get("model_family", task.family) != task.family:
    _fail("model_family", config.model_family, f"cannot be trained on config.task={task.name!r}; it needs "
          f"{task.family!r} (or leave model_family out: the task decides it).")
  task.validate(config, _fail)
  for field in FAMILY_LAYERS[task.family]:
    if config.get(field, 1) < 1:
      _fail(field, config[field], f"must be at least 1 for a {task.family} model (config.task={task.name!r}).")
  decodes = task.family != "encoder_only"  # only a decoder has a predicted length to fit
  for field in ("max_target_length", "max_eval_target_length") + (("max_predict_length",) if decodes else ()):
    if field in config and "max_len" in config and config[field] > config.max_len:
      _fail("max_len", config.max_len, f"is smaller than config.{field}={config[field]}; the model supports "
            "positions up to max_len (learned positions, the KV cache): raise max_len or lower the length.")
  if config.emb_dim % config.num_heads:
    _fail("emb_dim", config.emb_dim, f"must be divisible by config.num_heads={config.num_heads}.")
  kv = config.get("num_kv_heads") or config.num_heads
  if config.num_heads % kv:
    _fail("num_kv_heads", kv, f"must divide config.num_heads={config.num_heads}.")
  head_size = config.get("head_dim") or config.emb_dim // config.num_heads  # as the model computes it
  if config.get("positions") == "rope" and head_size % 2:
    _fail("positions", "rope", f"needs an even head size (config.head_dim, else emb_dim / num_heads; {head_size} here).")
  if config.get("mlm_head") and config.get("activation") == "swiglu":
    _fail("activation", "swiglu", "is a gated feed-forward; the masked-LM head's transform needs a plain activation "
          "(gelu, gelu_exact, relu or silu) with config.mlm_head=True.")
  if config.vocab_size < 16:
    _fail("vocab_size", config.vocab_size, "is too small for a SentencePiece vocabulary (>= 16).")
  if config.get("pad_id", 0) >= config.vocab_size:
    _fail("pad_id", config.pad_id, f"must be a token id below config.vocab_size={config.vocab_size}.")
  if len(tuple(config.mesh_shape)) != 3:
    _fail("mesh_shape", tuple(config.mesh_shape), "must have 3 sizes: (data, fsdp, tensor).")
  if config.get("parallelism") == "pmap" and tuple(config.mesh_shape)[1:] != (1, 1):
    _fail("mesh_shape", tuple(config.mesh_shape), "must be (-1, 1, 1) with config.parallelism='pmap' (data "
          "parallelism only); use parallelism='jit' to shard over the fsdp and tensor axes.")
  if config.per_device_batch_size % config.get("grad_accum_steps", 1):
    _fail("grad_accum_steps", config.grad_accum_steps,
          f"must divide config.per_device_batch_size={config.per_device_batch_size} (each device splits its "
          "rows into that many microbatches).")
