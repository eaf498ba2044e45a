"""Schedules against their closed formula; label-smoothed loss against a hand computation."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tx_jax.errors import ConfigError
from tx_jax.training import losses, schedules


def _config(**kw):
  c = ml_collections.ConfigDict(dict(learning_rate=0.002, warmup_steps=100, num_train_steps=1000,
                                     schedule="rsqrt"))
  c.update(kw)
  return c


@pytest.mark.parametrize("step", [0, 1, 50, 99, 100, 101, 400, 999])
def test_rsqrt_schedule_matches_formula(step):
  lr = schedules.make_schedule(_config())(step)
  expected = 0.002 * min(step / 100, math.sqrt(100 / max(step, 1)))
  np.testing.assert_allclose(float(lr), expected, rtol=1e-5, atol=1e-10)  # float32


@pytest.mark.parametrize("step", [0, 50, 100, 550, 1000])
def test_cosine_schedule_matches_formula(step):
  lr = schedules.make_schedule(_config(schedule="cosine", cosine_final_fraction=0.1))(step)
  if step < 100:
    expected = 0.002 * step / 100
  else:
    progress = (step - 100) / 900
    expected = 0.002 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
  np.testing.assert_allclose(float(lr), expected, rtol=1e-5)


def test_unknown_schedule_names_the_field():
  with pytest.raises(ConfigError, match="config.schedule"):
    schedules.make_schedule(_config(schedule="linear"))


def test_label_smoothed_loss_by_hand():
  logits = jnp.array([[[2.0, 0.5, -1.0], [0.0, 0.0, 1.0]]])  # [batch 1, len 2, vocab 3]
  targets = jnp.array([[0, 2]])
  weights = jnp.array([[1, 0]])  # second token is padding
  sums = losses.loss_sums(logits, targets, weights, label_smoothing=0.1)
  # Token 0: log-softmax of (2, 0.5, -1); smoothed target (0.9 + 0.1/3, 0.1/3, 0.1/3).
  z = math.log(math.exp(2.0) + math.exp(0.5) + math.exp(-1.0))
  logp = [2.0 - z, 0.5 - z, -1.0 - z]
  expected = -((0.9 + 0.1 / 3) * logp[0] + 0.1 / 3 * logp[1] + 0.1 / 3 * logp[2])
  np.testing.assert_allclose(float(sums["loss"]), expected, rtol=1e-6)
  np.testing.assert_allclose(float(sums["nll"]), -logp[0], rtol=1e-6)
  assert float(sums["tokens"]) == 1.0 and float(sums["correct"]) == 1.0
  # Same as optax's cross entropy against optax's smoothed labels.
  ref = optax.softmax_cross_entropy(logits[0, 0], optax.smooth_labels(jnp.eye(3)[0], 0.1))
  np.testing.assert_allclose(float(sums["loss"]), float(ref), rtol=1e-6)


def test_loss_is_normalised_over_non_pad_tokens_only():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, (2, 5)))
  weights = jnp.asarray([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
  sums = losses.loss_sums(logits, targets, weights, 0.1)
  smoothed, _ = losses.token_losses(logits, targets, 0.1)
  np.testing.assert_allclose(float(sums["loss"] / sums["tokens"]),
                             float(smoothed[weights == 1].mean()), rtol=1e-6)


def test_loss_sums_match_the_gather_and_argmax_formulas():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(3, 6, 50)) * 3, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 50, (3, 6)))
  targets = targets.at[0, :3].set(jnp.argmax(logits[0, :3], -1))  # some tokens predicted right
  weights = jnp.ones((3, 6))
  sums = losses.loss_sums(logits, targets, weights, 0.1)
  log_probs = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(sums["nll"]), float(nll.sum()), rtol=1e-5)
  np.testing.assert_allclose(float(sums["loss"]), float((0.9 * nll - 0.1 * log_probs.mean(-1)).sum()), rtol=1e-5)
  assert float(sums["correct"]) == float((jnp.argmax(logits, -1) == targets).sum()) >= 3
  grad = jax.grad(lambda l: losses.loss_sums(l, targets, weights, 0.1)["loss"])(logits)
  ref = jax.grad(lambda l: optax.softmax_cross_entropy(l, optax.smooth_labels(jax.nn.one_hot(targets, 50), 0.1)).sum())(
    logits)
  np.testing.assert_allclose(np.asarray(grad), np.asarray(ref), atol=1e-6)
