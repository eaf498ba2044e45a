"""Sequence classification: an encoder reads [CLS] text [EOS] rows (padded, not packed) and their labels."""

import functools

import numpy as np

from tx_jax import errors
from tx_jax.data import pipeline
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.models import token_layout
from tx_jax.tasks import base
from tx_jax.tasks import translation
from tx_jax.training import evaluation
from tx_jax.training import losses


def _label_in_range(record, *, num_classes: int, where: str):
  """The record, or a DataError: a label past the classifier's logits would be scored as no class at all."""
  if record is not None and not 0 <= record["label"] < num_classes:
    raise errors.DataError(f"A record of {where} has label {record['label']}, but config.num_classes={num_classes}; "
                           f"set --config.num_classes to the dataset's number of classes.")
  return record


class Classification(base.Task):
  """(text, label) records; accuracy and macro-F1 beside the majority class."""

  name = "classification"
  family = "encoder_only"
  records_kind = "labelled"
  vocab_suffix = "_enc"  # the vocabulary of masked-LM pretraining on the same corpus
  with_mask = True

  def validate(self, config, fail):
    if config.get("num_classes", 0) < 2:
      fail("num_classes", config.get("num_classes", 0), "must be at least 2 for config.task='classification'.")

  def records(self, config, split):
    """The labelled records, each label checked against config.num_classes as it is read."""
    check = functools.partial(_label_in_range, num_classes=config.num_classes, where=f"{config.dataset} {split}")
    return super().records(config, split).map(check)

  def features(self, record, *, tokenizer, max_length):
    ids = tokenizer.encode(record["text"])[:max_length - 2]  # cut, never dropped: a label needs its text
    return {"inputs": np.asarray(self.input_tokens(ids, tokenizer), np.int32),  # [CLS] ... [SEP]
            "labels": np.int32(record["label"])}

  def rows(self, config, length, *, train, bos_id=tokenizer_lib.BOS_ID):
    return functools.partial(pipeline.pad_rows, length=length, pad_id=config.get("pad_id", 0))

  def empty_row(self, config, length):
    # An example without tokens, padded as every row is: all padding, and a label no sum counts.
    empty = {"inputs": np.zeros((0,), np.int32), "labels": np.int32(-1)}
    return pipeline.padded(empty, length, config.get("pad_id", 0))

  skips_padding = True  # metric_sums takes token_capacity (tx_jax.models.token_layout)

  def metric_sums(self, model, batch, *, label_smoothing, deterministic, rng=None, mask_rate=0.15,
                  token_capacity=None):
    """Classification sums; with token_capacity (groups, fraction, fits), without the padding where it fits."""
    # The rows' segment ids (pipeline.padded) mask the padding, the same for the layouts and the attention masks.
    padding = self.padding_segments(batch)

    def sums(layout=None):
      logits = model.classify(batch["inputs"], segments=padding["inputs"], layout=layout, deterministic=deterministic,
                              rngs=base.dropout_rngs(deterministic, rng))
      return losses.classification_sums(logits, batch["labels"], label_smoothing)

    if token_capacity is None:
      return sums()
    return token_layout.where_it_fits(token_capacity, padding, lambda layouts: sums(layouts and layouts["inputs"]))

  def padding_segments(self, batch):
    """One example per row (pipeline.padded): its tokens' segment id is 1, the padding's 0."""
    return {"inputs": batch["inputs_segment_ids"]}

  def forward_flops(self, cfg, batch):
    return translation.sequence_flops(cfg, batch, cfg.num_encoder_layers, head=False)

  def input_tokens(self, ids, tokenizer):
    return [tokenizer.bos_id] + ids + [tokenizer.eos_id]

  def baselines(self, config, tokenizer, split, results):
    records = self.records(config, "train")
    train = [records[int(i)] for i in tokenizer_lib.sample_indices(len(records), base.BASELINE_SAMPLE)]
    evaluated = self.records(config, split)
    labels = [r["label"] for r in (evaluated[i] for i in range(len(evaluated))) if r is not None]
    return {f"{split}/majority_accuracy": evaluation.majority_accuracy([r["label"] for r in train if r], labels)}

  def report(self, summary):
    m, p = summary["metrics"], summary["split"] + "/"
    return [f"accuracy {m[p + 'accuracy']:.4f}  macro-F1 {m[p + 'macro_f1']:.4f}",
            f"majority-class accuracy (baseline): {m[p + 'majority_accuracy']:.4f}"]
