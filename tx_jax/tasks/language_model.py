"""Language modelling: a decoder-only model reads texts packed into rows; perplexity and bits per byte."""

import functools

import numpy as np

from tx_jax.data import pipeline
from tx_jax.tasks import base
from tx_jax.tasks import translation
from tx_jax.training import evaluation
from tx_jax.training import losses


class LanguageModel(base.Task):
  """Next-token prediction on the texts of config.target_language."""

  name = "lm"
  family = "decoder_only"
  records_kind = "texts"
  vocab_suffix = "_lm"

  def features(self, record, *, tokenizer, max_length):
    target = translation.encode_text(tokenizer, record["text"], max_length)
    return None if target is None else {"targets": target}

  def rows(self, config, length, *, train, bos_id=base.tokenizer_lib.BOS_ID):
    return functools.partial(pipeline.pack_rows, lengths={"targets": length}, shuffle_bins=train, bos_id=bos_id)

  def empty_row(self, config, length):
    return pipeline.empty_packed_row({"targets": length})

  def metric_sums(self, model, batch, *, label_smoothing, deterministic, rng=None, mask_rate=0.15):
    rngs = base.dropout_rngs(deterministic, rng)
    segments = batch["targets_segment_ids"]
    logits = model(batch["decoder_inputs"], segments=segments, positions=batch["targets_positions"],
                   deterministic=deterministic, rngs=rngs)  # reads only the (shifted) targets
    return losses.loss_sums(logits, batch["targets"], segments != 0, label_smoothing)

  def forward_flops(self, cfg, batch):
    return translation.sequence_flops(cfg, batch, cfg.num_decoder_layers, head=True)

  def input_tokens(self, ids, tokenizer):
    return [tokenizer.bos_id] + ids

  def baselines(self, config, tokenizer, split, results):
    train = self.evaluated_examples(config, tokenizer, "train", limit=base.BASELINE_SAMPLE)
    evaluated = [e["targets"] for e in self.evaluated_examples(config, tokenizer, split)]
    return {f"{split}/bits_per_byte": evaluation.bits_per_byte(results[f"{split}/nll"], evaluated, tokenizer),
            f"{split}/unigram_perplexity": evaluation.unigram_perplexity(
              base.tokens_of(train), np.concatenate(evaluated), config.vocab_size)}

  def report(self, summary):
    m, p = summary["metrics"], summary["split"] + "/"
    return [f"perplexity {m[p + 'perplexity']:.2f}  bits per byte {m[p + 'bits_per_byte']:.4f}",
            f"unigram perplexity of the same tokens (baseline): {m[p + 'unigram_perplexity']:.2f}"]
