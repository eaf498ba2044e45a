"""configs/wmt_base.py reads TFDS through the real code path, here on tfds.testing.mock_data."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import wmt_base
from tx_jax import errors
from tx_jax.data import pipeline, sources, task_data


def test_wmt_base_pipeline_yields_shaped_batches(tmp_path):
  config = wmt_base.get_config()
  config.vocab_size = 100  # mock data is random letters: too few distinct pieces for 32k
  config.vocab_path = str(tmp_path / "wmt.model")
  config.max_target_length = 64
  with tfds.testing.mock_data(num_examples=40):
    data = task_data.load(config)
  assert set(data.pairs) == {"train", "validation", "test"}
  assert len(data.pairs["train"]) == 40
  batches = pipeline.TrainBatches(data.train, global_rows=4, row_length=config.max_target_length, seed=0)
  batch = next(batches)
  assert set(batch) == set(pipeline.BATCH_KEYS)
  for value in batch.values():
    assert value.shape == (4, 64) and value.dtype == np.int32
  assert (batch["targets_segment_ids"] > 0).sum() > 0
  # en -> de: the source side is the English text.
  assert data.pairs["train"][0][0] and isinstance(data.pairs["train"][0][0], str)


def test_unprepared_tfds_dataset_explains_how_to_prepare(tmp_path):
  config = wmt_base.get_config()
  config.tfds_data_dir = str(tmp_path)
  with pytest.raises(errors.DataError, match="tfds build wmt14_translate/de-en"):
    sources.load_pairs(config)


def test_lm1b_base_pipeline_yields_shaped_batches(tmp_path):
  from configs import lm1b_base
  config = lm1b_base.get_config()
  config.vocab_size = 100
  config.vocab_path = str(tmp_path / "lm1b.model")
  with tfds.testing.mock_data(num_examples=30):
    data = task_data.load(config)
  assert len(data.pairs["train"]) == 30 and all(src == "" for src, _ in data.pairs["train"])
  assert data.pairs["validation"] and data.pairs["test"]  # (mock data ignores the slices' bounds)
  assert sources.tfds_split_names(config) == {"train": "train", "validation": "test[:50%]",
                                               "test": "test[50%:]"}
  batch = next(pipeline.TrainBatches(data.train, global_rows=2, row_length=256, seed=0))
  assert batch["targets"].shape == (2, 256) and not batch["inputs"].any()


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
    data = task_data.load(config)
  assert len(data.pairs["train"]) == 40 and all(label in (0, 1) for _, label in data.pairs["train"])
  batch = next(task_data.train_batches(config, data, global_rows=8))
  assert batch["inputs"].shape == (8, 128) and batch["labels"].shape == (8,)
  assert (batch["inputs"][:, 0] == 3).all()  # [CLS] first
  assert sources.tfds_split_names(config)["test"] == "validation"  # GLUE's test labels are hidden
