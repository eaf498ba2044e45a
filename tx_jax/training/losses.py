"""Label-smoothed cross entropy and token accuracy, summed over non-padding tokens."""

import jax
import jax.numpy as jnp


def token_losses(logits, targets, label_smoothing: float = 0.0):
  """Per-token (smoothed loss, plain negative log-likelihood), each [batch, len].

  The smoothed target puts 1 - label_smoothing + label_smoothing / vocab on the true token and
  label_smoothing / vocab elsewhere (optax.smooth_labels); its cross entropy is computed as
  (1 - ls) * nll + ls * mean(-log p) so no [batch, len, vocab] one-hot is materialised.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  smoothed = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(axis=-1)
  return smoothed, nll


def loss_sums(logits, targets, weights, label_smoothing: float = 0.0) -> dict:
  """Sums over tokens with weight 1 (not padding): loss, nll, correct predictions, token count."""
  smoothed, nll = token_losses(logits, targets, label_smoothing)
  weights = weights.astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {"loss": (smoothed * weights).sum(), "nll": (nll * weights).sum(),
          "correct": (correct * weights).sum(), "tokens": weights.sum()}


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
