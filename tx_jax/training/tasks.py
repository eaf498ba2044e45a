"""What each training task feeds its model and sums for the loss: translation, lm, mlm, classification.

Batches of translation, lm and mlm are packed rows (tx_jax.data.pipeline.BATCH_KEYS); a
classification batch is {"inputs": [batch, len] starting with [CLS], "labels": [batch]} with
label -1 on filler rows.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.training import losses

# The model family each task trains (tx_jax.models.registry.FAMILIES).
TASK_FAMILY = {"translation": "encoder_decoder", "lm": "decoder_only",
               "mlm": "encoder_only", "classification": "encoder_only"}
EVAL_MASK_SEED = 0  # evaluation masks the same positions every time, so MLM figures are comparable


def mask_tokens(tokens, key, *, vocab_size: int, mask_rate: float = 0.15):
  """BERT masking of tokens [batch, len]: returns (model inputs, selected [batch, len] bool).

  Each ordinary token is selected with probability `mask_rate`; a selected token becomes [MASK]
  80 % of the time, a random ordinary token 10 %, and stays itself 10 % (Devlin et al., 2019).
  Padding, EOS, BOS/[CLS] and [MASK] itself are never selected.
  """
  select_key, how_key, random_key = jax.random.split(key, 3)
  selected = jax.random.bernoulli(select_key, mask_rate, tokens.shape) & tokenizer_lib.maskable(tokens)
  how = jax.random.uniform(how_key, tokens.shape)
  random_tokens = jax.random.randint(random_key, tokens.shape, tokenizer_lib.FIRST_ORDINARY_ID, vocab_size)
  inputs = jnp.where(selected & (how < 0.8), tokenizer_lib.MASK_ID,
                     jnp.where(selected & (how < 0.9), random_tokens, tokens))
  return inputs.astype(tokens.dtype), selected


def metric_sums(model: nnx.Module, batch: dict, *, task: str, label_smoothing: float, deterministic: bool,
                rng=None, mask_rate: float = 0.15) -> dict:
  """Summed loss and metrics of `model` on one batch of `task` (see tx_jax.training.losses).

  `rng` (a key) drives dropout and, for mlm, the masking; evaluation (deterministic) masks with a
  fixed key.
  """
  rngs = None if deterministic or rng is None else nnx.Rngs(dropout=rng)
  if task == "classification":
    logits = model.classify(batch["inputs"], deterministic=deterministic, rngs=rngs)
    return losses.classification_sums(logits, batch["labels"], label_smoothing)
  segments, positions = batch["targets_segment_ids"], batch["targets_positions"]
  if task == "mlm":
    key = jax.random.key(EVAL_MASK_SEED) if deterministic or rng is None else jax.random.fold_in(rng, 1)
    inputs, selected = mask_tokens(batch["targets"], key, vocab_size=model.cfg.vocab_size, mask_rate=mask_rate)
    logits = model(inputs, segments=segments, positions=positions, deterministic=deterministic, rngs=rngs)
    return losses.loss_sums(logits, batch["targets"], selected, label_smoothing)
  if task == "lm":  # a decoder-only model reads only the (shifted) targets
    logits = model(batch["decoder_inputs"], segments=segments, positions=positions,
                   deterministic=deterministic, rngs=rngs)
  else:
    logits = model(batch["inputs"], batch["decoder_inputs"],
                   input_segments=batch["inputs_segment_ids"], target_segments=segments,
                   input_positions=batch["inputs_positions"], target_positions=positions,
                   deterministic=deterministic, rngs=rngs)
  return losses.loss_sums(logits, batch["targets"], segments != 0, label_smoothing)
