"""Evaluation metrics shared by training and tx_jax.evaluate: loss/accuracy and SacreBLEU."""

import jax
import numpy as np
import sacrebleu

from tx_jax import decode, parallel
from tx_jax.data import pipeline
from tx_jax.training import metrics


def loss_metrics(eval_fn, params, examples, config, mesh, prefix="eval") -> dict:
  """Label-smoothed loss, nll, token accuracy and perplexity over packed batches of `examples`."""
  totals = {}
  for batch in pipeline.eval_batches(
      examples, global_rows=config.per_device_batch_size * jax.device_count(),
      row_length=config.max_eval_target_length, process_index=jax.process_index(),
      process_count=jax.process_count(), max_batches=config.num_eval_steps):
    sums = jax.device_get(eval_fn(params, parallel.global_batch(batch, mesh)))
    totals = {k: totals.get(k, 0.0) + float(v) for k, v in sums.items()}
  return metrics.summarize(totals, prefix)


def bleu(graphdef, params, processor, pairs, config, mesh=None):
  """Decodes the sources of `pairs` with beam search; returns (BLEU result, its signature, hypotheses)."""
  hypotheses = decode.translate_texts(
    graphdef, params, processor, [p[0] for p in pairs], batch_size=config.eval_batch_size,
    beam_size=config.beam_size, alpha=config.length_penalty_alpha,
    max_predict_length=config.max_predict_length, mesh=mesh)
  metric = sacrebleu.BLEU()
  result = metric.corpus_score(hypotheses, [[p[1] for p in pairs]])
  return result, str(metric.get_signature()), hypotheses


def unigram_perplexity(train: pipeline.Examples, evaluated: pipeline.Examples, vocab_size: int) -> float:
  """Perplexity of `evaluated`'s target tokens under add-one-smoothed unigram counts of `train`'s.

  The baseline an LM must beat: the same tokens (EOS included) scored without any context.
  """
  counts = np.bincount(np.concatenate(train.targets), minlength=vocab_size).astype(np.float64) + 1.0
  log_probs = np.log(counts / counts.sum())
  tokens = np.concatenate(evaluated.targets)
  return float(np.exp(-log_probs[tokens].mean()))
