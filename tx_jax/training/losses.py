"""Label-smoothed cross entropy and token accuracy, summed over non-padding tokens."""

import jax
import jax.numpy as jnp


def _target_terms(logits, targets):
  """(log-sum-exp [batch, len], target logit, mean logit, target is a maximum), all from one pass over the vocabulary.

  Logits are shifted by their (constant) maximum, so "the target is the argmax" is "its shifted
  logit is 0": one max-reduce instead of argmax's (value, index) reduce. The target logit is picked
  with an iota compare rather than a gather, so its gradient is a select that fuses with the
  softmax's instead of a scatter (both measured on the training step, experiments/README.md).
  """
  logits = logits.astype(jnp.float32)
  shifted = logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
  lse = jnp.log(jnp.exp(shifted).sum(axis=-1))
  is_target = jax.lax.broadcasted_iota(targets.dtype, shifted.shape, shifted.ndim - 1) == targets[..., None]
  target = jnp.where(is_target, shifted, 0.0).sum(axis=-1)
  return lse, target, shifted.mean(axis=-1), target >= 0.0


def _smoothed_terms(logits, targets, label_smoothing: float):
  """(smoothed loss, negative log-likelihood, target is a maximum), each [batch, len]."""
  lse, target, mean, is_max = _target_terms(logits, targets)
  nll = lse - target
  return (1.0 - label_smoothing) * nll + label_smoothing * (lse - mean), nll, is_max


def token_losses(logits, targets, label_smoothing: float = 0.0):
  """Per-token (smoothed loss, plain negative log-likelihood), each [batch, len].

  The smoothed target puts 1 - label_smoothing + label_smoothing / vocab on the true token and
  label_smoothing / vocab elsewhere (optax.smooth_labels); its cross entropy is computed as
  (1 - ls) * nll + ls * mean(-log p) so no [batch, len, vocab] one-hot is materialised.
  """
  smoothed, nll, _ = _smoothed_terms(logits, targets, label_smoothing)
  return smoothed, nll


def loss_sums(logits, targets, weights, label_smoothing: float = 0.0) -> dict:
  """Sums over tokens with weight 1 (not padding): loss, nll, correct predictions, token count.

  A token is correct when its target's logit is the largest (a tie counts as correct, where
  argmax would pick the lower id; ties of float32 logits do not occur in practice).
  """
  smoothed, nll, is_max = _smoothed_terms(logits, targets, label_smoothing)
  weights = weights.astype(jnp.float32)
  return {"loss": (smoothed * weights).sum(), "nll": (nll * weights).sum(),
          "correct": (is_max * weights).sum(), "tokens": weights.sum()}


def classification_sums(logits, labels, label_smoothing: float = 0.0) -> dict:
  """Sums over examples with label >= 0 (-1 marks filler rows): loss, nll, correct, count, confusion.

  logits: [batch, classes]; labels: [batch]. "tokens" counts examples so the per-token means of
  `tx_jax.training.metrics.summarize` become per-example means; "confusion" [classes, classes]
  counts (true, predicted) pairs for macro-F1.
  """
  num_classes = logits.shape[-1]
  valid = labels >= 0
  safe = jnp.where(valid, labels, 0)
  smoothed, nll = token_losses(logits, safe, label_smoothing)
  weights = valid.astype(jnp.float32)
  predicted = jnp.argmax(logits, axis=-1)
  confusion = jnp.zeros((num_classes, num_classes), jnp.float32).at[safe, predicted].add(weights)
  return {"loss": (smoothed * weights).sum(), "nll": (nll * weights).sum(),
          "correct": ((predicted == safe) * weights).sum(), "tokens": weights.sum(), "confusion": confusion}
