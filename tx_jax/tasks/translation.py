"""Translation: an encoder-decoder reads (source, target) pairs packed into rows; scored by SacreBLEU."""

import functools

import numpy as np

from tx_jax.data import pipeline
from tx_jax.models import token_layout
from tx_jax.tasks import base
from tx_jax.training import losses


def encode_text(tokenizer, text: str, max_length: int, *, target: bool = False):
  """Token ids of `text` (a `target`-side text: the target vocabulary's) + EOS as int32, or None when too long."""
  ids = tokenizer.encode_target(text) if target else tokenizer.encode(text)
  return None if len(ids) + 1 > max_length else np.asarray(ids + [tokenizer.eos_id], np.int32)


def block_sizes(cfg):
  """(emb_dim, query width, key/value width, feed-forward weights) of one block: what its matmuls cost per token."""
  d, q, kv = cfg.emb_dim, cfg.num_heads * cfg.qkv_head_dim, cfg.kv_heads * cfg.qkv_head_dim
  return d, q, kv, (3 if cfg.activation == "swiglu" else 2) * d * cfg.mlp_dim


def sequence_flops(cfg, batch: dict, layers: int, head: bool) -> float:
  """Forward multiply-adds of a single-stack model over the non-padding tokens of batch["targets"|"inputs"]."""
  d, q, kv, ffn = block_sizes(cfg)
  key = "targets" if "targets" in batch else "inputs"
  scores = 2 * batch[key].shape[1] * q  # QK^T and weights x V, per query token, over the whole row
  per_token = layers * (2 * d * q + 2 * d * kv + ffn + scores) + (d * cfg.vocab_size if head else 0)
  return float(per_token * pipeline.real_tokens(batch, key))


class Translation(base.Task):
  """(source, target) pairs in config.source_language -> config.target_language."""

  name = "translation"
  family = "encoder_decoder"
  records_kind = "pairs"

  def validate(self, config, fail):
    if config.get("source_language") == config.get("target_language"):
      fail("target_language", config.target_language, "must differ from config.source_language.")

  def vocab_texts(self, record):
    return [record["source"], record["target"]]

  def features(self, record, *, tokenizer, max_length):
    source = encode_text(tokenizer, record["source"], max_length)
    target = encode_text(tokenizer, record["target"], max_length, target=True)
    return None if source is None or target is None else {"inputs": source, "targets": target}

  def rows(self, config, length, *, train, bos_id=base.tokenizer_lib.BOS_ID):
    return functools.partial(pipeline.pack_rows, lengths={"inputs": length, "targets": length}, shuffle_bins=train,
                             bos_id=bos_id)

  def empty_row(self, config, length):
    return pipeline.empty_packed_row({"inputs": length, "targets": length})

  skips_padding = True  # metric_sums takes token_capacity (tx_jax.models.token_layout)

  def metric_sums(self, model, batch, *, label_smoothing, deterministic, rng=None, mask_rate=0.15,
                  token_capacity=None):
    """Loss sums of the targets; with token_capacity (groups, fraction, fits), without the padding where it fits."""
    if token_capacity is None:
      return self._sums(model, batch, label_smoothing, deterministic, rng, layouts=None)
    return token_layout.where_it_fits(token_capacity, self.padding_segments(batch), lambda layouts: self._sums(
      model, batch, label_smoothing, deterministic, rng, layouts))

  def input_tokens(self, ids, tokenizer):
    return ids + [tokenizer.eos_id]  # as encode_text makes the source

  def padding_segments(self, batch):
    """The sources' and the targets' segment ids."""
    return {"inputs": batch["inputs_segment_ids"], "targets": batch["targets_segment_ids"]}

  @staticmethod
  def _sums(model, batch, label_smoothing, deterministic, rng, layouts):
    """Loss sums of the model on `batch`, over rows (layouts None) or over the layouts' tokens."""
    rngs = base.dropout_rngs(deterministic, rng)
    segments, targets = batch["targets_segment_ids"], batch["targets"]
    logits = model(batch["inputs"], batch["decoder_inputs"],
                   input_segments=batch["inputs_segment_ids"], target_segments=segments,
                   input_positions=batch["inputs_positions"], target_positions=batch["targets_positions"],
                   input_layout=layouts and layouts["inputs"], target_layout=layouts and layouts["targets"],
                   deterministic=deterministic, rngs=rngs)
    if layouts is not None:  # the targets in the logits' layout; empty slots have segment 0, so weight 0
      segments, targets = layouts["targets"].unpad(segments), layouts["targets"].unpad(targets)
    return losses.loss_sums(logits, targets, segments != 0, label_smoothing)

  def forward_flops(self, cfg, batch):
    d, q, kv, ffn = block_sizes(cfg)
    self_attention = 2 * d * q + 2 * d * kv
    n, n_source = batch["targets"].shape[1], batch["inputs"].shape[1]
    per_source = cfg.num_encoder_layers * (self_attention + ffn + 2 * n_source * q) + cfg.num_decoder_layers * 2 * d * kv
    per_target = cfg.num_decoder_layers * (self_attention + 2 * d * q + ffn + 2 * n * q + 2 * n_source * q)
    return float(per_source * pipeline.real_tokens(batch, "inputs")
                 + (per_target + d * cfg.vocab_size) * pipeline.real_tokens(batch, "targets"))

  def pairs(self, config, split: str, limit: int = 0) -> list:
    """The first `limit` (0: all) raw (source, target) pairs of `split`, for decoding and references."""
    records = self.records(config, split)
    n = len(records) if not limit else min(limit, len(records))
    return [(r["source"], r["target"]) for r in (records[i] for i in range(n))]

  def report(self, summary):
    if "scores" not in summary:
      return []
    lines = []
    for m in ("BLEU", "chrF", "TER"):
      score = summary["scores"][m]
      ci = f" +- {score['ci95']:.2f} (95 % bootstrap CI)" if score.get("ci95") is not None else ""
      lines.append(f"{score['name']} {score['score']:.2f}{ci}  signature: {score['signature']}")
    lines.append(f"SacreBLEU {summary['scores']['BLEU']['details']}")
    if summary.get("averaged_steps"):
      lines.append(f"parameters: the mean of steps {', '.join(map(str, summary['averaged_steps']))}")
    return lines + [f"translations: {summary['translations']}"]
