"""Evaluation metrics shared by training and tx_jax.evaluate: loss/accuracy, SacreBLEU, baselines."""

import math

import jax
import numpy as np

from jax.experimental import multihost_utils

from tx_jax import parallel
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.inference import decode, scores
from tx_jax.training import metrics


def loss_metrics(eval_fn, params, task, tokenizer, split: str, config, mesh, prefix="eval",
                 max_batches: int | None = None) -> dict:
  """Label-smoothed loss, nll, accuracy and perplexity (classification: macro-F1) over a split's batches.

  Accuracy is per token (translation, lm), per masked token (mlm) or per example (classification).
  Reads config.num_eval_steps batches unless `max_batches` is given (-1: the whole split). The
  batches stream through the task's pipeline; a process whose examples are done feeds filler
  rows until every process is done.
  """
  totals = {}
  for batch, done in task.eval_batches(
      config, tokenizer, split, global_rows=parallel.global_rows(config),
      process_index=jax.process_index(), process_count=jax.process_count(),
      max_batches=config.num_eval_steps if max_batches is None else max_batches):
    if all_done(done):
      break
    sums = jax.device_get(eval_fn(params, parallel.global_batch(batch, mesh)))
    totals = {k: totals.get(k, 0.0) + np.asarray(v, np.float64) for k, v in sums.items()}
  return metrics.summarize(totals, prefix)


def all_done(done: bool) -> bool:
  """Whether every process is done (one tiny all-gather per batch when there are several)."""
  if jax.process_count() == 1:
    return done
  return bool(np.all(multihost_utils.process_allgather(np.asarray(done))))


def translation_scores(graphdef, params, processor, pairs, config, mesh=None, *, confidence: bool = False):
  """Beam-search translations of `pairs`' sources and their SacreBLEU BLEU, chrF and TER.

  Returns (tx_jax.inference.scores.corpus_scores(...) of the hypotheses, hypotheses); with
  `confidence`, each metric carries its 95 % bootstrap interval (1000 resamples, seeded).
  """
  hypotheses = decode.translate_texts(
    graphdef, params, processor, [p[0] for p in pairs], batch_size=config.eval_batch_size,
    beam_size=config.beam_size, alpha=config.length_penalty_alpha,
    max_predict_length=config.max_predict_length, mesh=mesh, max_source_length=config.max_eval_target_length)
  return scores.corpus_scores(hypotheses, [p[1] for p in pairs], confidence=confidence), hypotheses


def bits_per_byte(mean_nll: float, evaluated: list, processor) -> float:
  """Bits per UTF-8 byte of the evaluated texts, from the mean per-token nll (nats) over all their tokens.

  Each text's bytes are those of its detokenized form plus one for its end (the EOS token, a
  newline in a text file), so models with different vocabularies are compared on the same bytes.
  """
  tokens = sum(len(t) for t in evaluated)  # evaluated: the target arrays (EOS included) scored
  num_bytes = sum(len(processor.decode(t[:-1].tolist()).encode("utf-8")) + 1 for t in evaluated)
  return mean_nll * tokens / math.log(2) / num_bytes


def majority_accuracy(train_labels, evaluated_labels) -> float:
  """Accuracy of always answering the most frequent training label: the baseline a classifier must beat."""
  majority = np.bincount(train_labels).argmax()
  return float(np.mean(np.asarray(evaluated_labels) == majority))


def unigram_perplexity(train_tokens, evaluated_tokens, vocab_size: int, maskable_only: bool = False) -> float:
  """Perplexity of the evaluated target tokens under add-one-smoothed unigram counts of the training tokens.

  The baseline an LM must beat: the same tokens (EOS included) scored without any context. With
  `maskable_only`, only the tokens masked-LM pretraining can mask are counted and scored.
  """
  counts = np.bincount(_tokens(train_tokens, maskable_only), minlength=vocab_size).astype(np.float64) + 1.0
  if maskable_only:
    counts[~tokenizer_lib.maskable(np.arange(vocab_size))] = 0.0
  probs = counts / counts.sum()
  return float(np.exp(-np.log(probs[_tokens(evaluated_tokens, maskable_only)]).mean()))


def most_frequent_token_accuracy(train_tokens, evaluated_tokens) -> float:
  """Masked-LM baseline: how often always guessing the most frequent maskable training token is right."""
  guess = np.bincount(_tokens(train_tokens, True)).argmax()
  return float(np.mean(_tokens(evaluated_tokens, True) == guess))


def _tokens(tokens, maskable_only: bool):
  tokens = np.asarray(tokens)
  return tokens[tokenizer_lib.maskable(tokens)] if maskable_only else tokens
