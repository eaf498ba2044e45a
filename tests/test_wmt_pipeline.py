"""The TFDS configs (WMT, LM1B, GLUE) stream through the real Grain pipeline, here on tfds.testing.mock_data."""

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import wmt_base
from tx_jax import errors, tasks
from tx_jax.data import pipeline, sources


def _stream(config, rows):
  """(task, tokenizer, first training batch, the train records) of a TFDS config under mock data."""
  task = tasks.get(config)
  tokenizer = task.tokenizer(config, train=True)
  return task, tokenizer, next(task.train_batches(config, tokenizer, global_rows=rows)), task.records(config, "train")


def test_wmt_base_pipeline_yields_shaped_batches(tmp_path):
  config = wmt_base.get_config()
  config.vocab_size = 100  # mock data is random letters: too few distinct pieces for 32k
  config.vocab_path = str(tmp_path / "wmt.model")
  config.max_target_length = 64
  with tfds.testing.mock_data(num_examples=40):
    task, tokenizer, batch, records = _stream(config, 4)
    assert len(records) == 40
    first = records[0]  # en -> de: the source side is the English text
    assert set(first) == {"source", "target"} and isinstance(first["source"], str) and first["source"]
    evals = [b for b, _ in itertools.takewhile(lambda x: not x[1], task.eval_batches(config, tokenizer, "validation",
                                                                                       global_rows=4))]
  assert set(batch) == set(pipeline.BATCH_KEYS)
  for value in batch.values():
    assert value.shape == (4, 64) and value.dtype == np.int32
  assert (batch["targets_segment_ids"] > 0).sum() > 0
  assert evals and all(b["targets"].shape == (4, config.max_eval_target_length) for b in evals)


def test_unprepared_tfds_dataset_explains_how_to_prepare(tmp_path):
  config = wmt_base.get_config()
  config.tfds_data_dir = str(tmp_path)
  with pytest.raises(errors.DataError, match="tfds build wmt14_translate/de-en"):
    sources.reader(config).pairs(config, "train")


def test_lm1b_base_pipeline_yields_shaped_batches(tmp_path):
  from configs import lm1b_base
  config = lm1b_base.get_config()
  config.vocab_size = 100
  config.vocab_path = str(tmp_path / "lm1b.model")
  with tfds.testing.mock_data(num_examples=30):
    task, _, batch, records = _stream(config, 2)
    assert len(records) == 30 and set(records[0]) == {"text"}
    assert len(task.records(config, "validation")) and len(task.records(config, "test"))
  assert sources.tfds_split_names(config) == {"train": "train", "validation": "test[:50%]",
                                               "test": "test[50%:]"}
  assert batch["targets"].shape == (2, 256) and "inputs" not in batch  # a decoder-only model reads no source


def test_wmt_big_is_the_paper_shape():
  from configs import wmt_big
  config = wmt_big.get_config()
  assert (config.emb_dim, config.mlp_dim, config.num_heads, config.num_encoder_layers) == (1024, 4096, 16, 6)


def test_sst2_base_pipeline_yields_labelled_batches(tmp_path):
  from configs import sst2_base
  config = sst2_base.get_config()
  config.vocab_size = 100
  config.vocab_path = str(tmp_path / "sst2.model")
  with tfds.testing.mock_data(num_examples=40):
    _, _, batch, records = _stream(config, 8)
    assert len(records) == 40 and all(records[i]["label"] in (0, 1) for i in range(40))
  assert batch["inputs"].shape == (8, 128) and batch["labels"].shape == (8,)
  assert (batch["inputs"][:, 0] == 3).all()  # [CLS] first
  assert sources.tfds_split_names(config)["test"] == "validation"  # GLUE's test labels are hidden
