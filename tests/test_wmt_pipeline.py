"""configs/wmt_base.py reads TFDS through the real code path, here on tfds.testing.mock_data."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import wmt_base
from tx_jax import errors
from tx_jax.data import pipeline, sources, translation


def test_wmt_base_pipeline_yields_shaped_batches(tmp_path):
  config = wmt_base.get_config()
  config.vocab_size = 100  # mock data is random letters: too few distinct pieces for 32k
  config.vocab_path = str(tmp_path / "wmt.model")
  config.max_target_length = 64
  with tfds.testing.mock_data(num_examples=40):
    data = translation.load_translation_data(config)
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
