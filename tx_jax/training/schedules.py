"""Learning-rate schedules: linear warmup, then inverse square root, cosine or constant."""

import jax.numpy as jnp
import optax

from tx_jax import errors
from tx_jax.training import ema

SCHEDULES = ("rsqrt", "cosine", "constant")


def make_schedule(config) -> optax.Schedule:
  """The schedule named by `config.schedule`, peaking at `learning_rate` after `warmup_steps`."""
  peak, warmup = config.learning_rate, config.warmup_steps
  warmup_fn = optax.linear_schedule(0.0, peak, max(warmup, 1))
  if config.schedule == "rsqrt":
    # lr(step) = peak * min(step / warmup, sqrt(warmup / step)), as in "Attention Is All You Need".
    decay = lambda count: peak * jnp.sqrt(max(warmup, 1) / (jnp.maximum(count, 0) + max(warmup, 1)))
  elif config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, max(config.num_train_steps - warmup, 1),
                                        alpha=config.get("cosine_final_fraction", 0.1))
  elif config.schedule == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise errors.ConfigError(f"config.schedule={config.schedule!r} is unknown; use one of {SCHEDULES}.")
  return optax.join_schedules([warmup_fn, decay], [warmup])


def make_optimizer(config, schedule) -> optax.GradientTransformation:
  """Adam (or AdamW when weight_decay > 0) with optional global-norm clipping and parameter EMA (ema_decay)."""
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.weight_decay > 0:
    parts.append(optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                             weight_decay=config.weight_decay))
  else:
    parts.append(optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps))
  if config.get("ema_decay", 0.0) > 0:  # last, so it averages the parameters the final updates give
    parts.append(ema.ema_of_params(config.ema_decay))
  return optax.chain(*parts)
