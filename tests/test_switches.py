"""Every component switch trains a real step with finite loss in every family, on real batches."""

import math

import pytest

from conftest import first_train_batch, make_tiny_config, make_tiny_encoder_config, with_fields
from tx_jax import parallel
from tx_jax.training import experiment

# Four switch sets that between them cover each norm position, feed-forward kind and position kind.
SWITCHES = [
  dict(norm_position="pre", activation="relu", positions="sinusoidal", norm="layernorm"),
  dict(norm_position="post", activation="gelu", positions="learned", norm="rmsnorm", use_bias=False),
  dict(norm_position="pre", activation="swiglu", positions="rope", num_heads=4, num_kv_heads=2,
       tie_output_embedding=False),
  dict(norm_position="post", activation="relu", positions="none", num_heads=4, num_kv_heads=1,
       scan_layers=True, remat=True),
]
TASKS = {"encoder_decoder": "translation", "decoder_only": "lm", "encoder_only": "classification"}


def _config(family, small_corpus_dir, vocab_dir, tmp_path_factory):
  if family == "encoder_only":
    return make_tiny_encoder_config(vocab_dir, "classification")
  config = make_tiny_config(small_corpus_dir, vocab_dir)
  if family == "decoder_only":
    config.update(task="lm", source_language="", target_language="en",
                  num_encoder_layers=0, num_predict_sentences=0)
    config.vocab_path = str(tmp_path_factory.getbasetemp() / "switches_lm.model")
  return config


@pytest.fixture(scope="module")
def real_batches(small_corpus_dir, vocab_dir, tmp_path_factory):
  """One real training batch per family (its default task), and the config it came from."""
  out = {}
  for family in TASKS:
    config = _config(family, small_corpus_dir, vocab_dir, tmp_path_factory)
    out[family] = (config, first_train_batch(config, 8))
  return out


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
@pytest.mark.parametrize("family", list(TASKS))
def test_switch_trains_one_step_with_finite_loss(family, switches, real_batches):
  config, batch = real_batches[family]
  config = with_fields(config, num_encoder_layers=2, num_decoder_layers=2 if family != "encoder_only" else 0,
                       dropout_rate=0.1, attention_dropout_rate=0.1, **switches)
  mesh = parallel.make_mesh(config.mesh_shape)
  _, state, train_fn, _ = experiment.build(config, mesh)
  state, sums = train_fn(state, parallel.global_batch(batch, mesh))
  loss = float(sums["loss"]) / float(sums["tokens"])
  assert math.isfinite(loss) and loss > 0.0
  assert 0.0 < float(sums["grad_norm"]) < float("inf") and int(state.step) == 1
