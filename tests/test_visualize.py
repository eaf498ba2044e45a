"""Attention maps: sown weights of every kind and family, the layers x heads figure, the CLI, TensorBoard."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from flax import nnx

from conftest import make_tiny_config, with_fields
from tx_jax import errors, train, visualize
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.inference import attention_maps, attention_plots, restore
from tx_jax.models import attention, registry
from tx_jax.models.config import ModelConfig
from tx_jax.training import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS, HEADS = 2, 2
TEXT = "Klicken Sie auf OK, um das Dialogfeld zu schließen."


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory, small_corpus_dir, vocab_dir):
  """A 2+2-layer, 2-head translation model trained for 2 steps (config.json, checkpoint, vocabulary)."""
  workdir = str(tmp_path_factory.mktemp("visualize_run"))
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_encoder_layers=LAYERS, num_decoder_layers=LAYERS,
                            num_heads=HEADS, num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2,
                            num_eval_steps=1, num_predict_sentences=0)
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def restored(trained_workdir):
  """(config, graphdef, params, processor) of the trained workdir."""
  return restore.restore_for_inference(trained_workdir)


def _check_rows(weights, mask=None):
  """Every query row sums to 1 over its unmasked keys and puts nothing on masked ones."""
  if mask is not None:
    assert np.all(weights[..., ~mask] == 0.0)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_encoder_decoder_weights_per_kind(restored):
  config, graphdef, params, processor = restored
  target = "Click OK to close the dialog."
  maps = attention_maps.attention_weights(graphdef, params, config, processor, TEXT, target)
  src_len, tgt_len = len(processor.encode(TEXT)) + 1, len(processor.encode(target)) + 1  # + </s>, + <s>
  shapes = {"encoder_self": (src_len, src_len), "decoder_self": (tgt_len, tgt_len), "cross": (tgt_len, src_len)}
  assert list(maps) == ["encoder_self", "decoder_self", "cross"]
  for kind, (q_len, k_len) in shapes.items():
    m = maps[kind]
    assert m.weights.shape == (LAYERS, HEADS, q_len, k_len), kind
    assert (len(m.query_labels), len(m.key_labels)) == (q_len, k_len)
    _check_rows(m.weights, np.tril(np.ones((q_len, k_len), bool)) if kind == "decoder_self" else None)
  assert maps["encoder_self"].key_labels == processor.encode(TEXT, out_type=str) + ["</s>"]
  assert maps["decoder_self"].key_labels[0] == "<s>" and maps["cross"].query_labels[-1] == "</s>"
  assert np.all(np.triu(maps["decoder_self"].weights, k=1) == 0.0)  # causal: nothing above the diagonal
  assert np.any(np.triu(maps["encoder_self"].weights, k=1) > 0.0)  # bidirectional

  # Without a target the decoder reads the model's own greedy translation.
  own = attention_maps.attention_weights(graphdef, params, config, processor, TEXT)
  greedy = attention_maps.greedy_target(graphdef, params, config, processor.encode(TEXT) + [tokenizer_lib.EOS_ID])
  assert own["cross"].weights.shape == (LAYERS, HEADS, len(greedy) + 1, src_len)
  assert own["decoder_self"].key_labels == ["<s>"] + attention_maps.pieces(processor, greedy)


@pytest.mark.parametrize("family, causal", [("decoder_only", True), ("encoder_only", False)])
def test_self_attention_of_the_other_families(restored, family, causal):
  config, _, _, processor = restored
  config = config.copy_and_resolve_references()
  config.task, config.num_heads = {"decoder_only": "lm", "encoder_only": "mlm"}[family], 4
  graphdef, params = nnx.split(registry.build_model(config, nnx.Rngs(0)), nnx.Param)
  maps = attention_maps.attention_weights(graphdef, params, config, processor, TEXT)
  assert list(maps) == ["self"]
  n = len(processor.encode(TEXT)) + 1  # <s> first (decoder-only) or </s> last (encoder-only)
  assert maps["self"].weights.shape == (LAYERS, 4, n, n)
  _check_rows(maps["self"].weights, np.tril(np.ones((n, n), bool)) if causal else None)
  assert np.any(np.triu(maps["self"].weights, k=1) > 0.0) != causal
  with pytest.raises(errors.UserError, match="only read by encoder_decoder"):
    attention_maps.attention_weights(graphdef, params, config, processor, TEXT, target="x")


@pytest.mark.parametrize("field, value", [("remat", True), ("scan_layers", True),
                                          ("attention_impl", "dot_product_attention")])
def test_weights_do_not_depend_on_how_the_stack_runs(restored, field, value):
  config, graphdef, params, processor = restored
  switched = with_fields(config, **{field: value})
  switched_graphdef = nnx.split(nnx.eval_shape(lambda: registry.build_model(switched, nnx.Rngs(0))), nnx.Param)[0]
  a = attention_maps.attention_weights(graphdef, params, config, processor, TEXT, "Click OK.")
  b = attention_maps.attention_weights(switched_graphdef, params, switched, processor, TEXT, "Click OK.")
  for kind in a:
    np.testing.assert_allclose(b[kind].weights, a[kind].weights, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_sown_weights_are_the_softmax_and_default_model_sows_nothing(kv_heads):
  cfg = ModelConfig(vocab_size=10, emb_dim=16, num_heads=2, num_kv_heads=kv_heads, attention_dropout_rate=0.0)
  layer = attention.Attention(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 5, 16))
  segments = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  mask = attention.make_attention_mask(segments, segments)
  call = lambda m, x: m(x, mask=mask)[0]
  out, sown = nnx.capture(call, nnx.Intermediate)(layer, x)
  assert not nnx.to_flat_state(sown) and not layer.sow_weights  # off by default: nothing recorded
  viewed = nnx.view(layer, sow_weights=True)
  out_viewed, sown = nnx.capture(call, nnx.Intermediate)(viewed, x)
  np.testing.assert_allclose(out_viewed, out, atol=1e-6)  # the view computes the same output
  (weights,) = sown["attention_weights"].get_value()
  assert weights.shape == (2, 2, 5, 5)  # [batch, heads, q_len, k_len]
  _check_rows(np.asarray(weights[0, :, :3]), np.array([True, True, True, False, False]))  # the real queries
  # Head h of the weights is the softmax of q_h . k_(h // groups) / sqrt(d).
  q = layer.query(x).reshape(2, 5, 2, 8)
  k = jnp.repeat(layer.key(x).reshape(2, 5, kv_heads, 8), 2 // kv_heads, axis=2)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8) + jnp.where(mask, 0.0, -1e30)
  np.testing.assert_allclose(weights, jax.nn.softmax(logits, axis=-1), atol=1e-5)


def test_figure_is_a_layers_by_heads_grid_and_saves_a_png(restored, tmp_path):
  config, graphdef, params, processor = restored
  m = attention_maps.attention_weights(graphdef, params, config, processor, TEXT)["cross"]
  fig = attention_plots.plot_attention(m.weights, m.query_labels, m.key_labels, "cross")
  panels = [ax for ax in fig.axes if ax.images]
  assert len(panels) == LAYERS * HEADS
  bottom_left = panels[(LAYERS - 1) * HEADS]
  assert [t.get_text() for t in bottom_left.get_xticklabels()] == m.key_labels
  assert [t.get_text() for t in bottom_left.get_yticklabels()] == m.query_labels
  path = str(tmp_path / "cross.png")
  fig.savefig(path)
  pixels = matplotlib.image.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0


def _visualize(*args, home=None):
  env = dict(os.environ, HOME=str(home)) if home else None
  return subprocess.run([sys.executable, "-m", "tx_jax.visualize", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=env)


def test_cli_writes_one_png_per_kind(trained_workdir, tmp_path):
  out = str(tmp_path / "attn.png")
  result = _visualize(f"--workdir={trained_workdir}", f"--text={TEXT}", f"--out={out}", "--kind=all")
  assert result.returncode == 0, result.stderr[-2000:]
  for kind in ("encoder_self", "decoder_self", "cross"):
    assert matplotlib.image.imread(str(tmp_path / f"attn_{kind}.png")).size > 0
  # --out=~/... as a shell passes it (no expansion after "="): written in the home directory, not in ./~/.
  result = _visualize(f"--workdir={trained_workdir}", f"--text={TEXT}", "--out=~/cross.png", "--target=Click OK.",
                      home=tmp_path)
  assert result.returncode == 0 and matplotlib.image.imread(str(tmp_path / "cross.png")).size > 0  # default: cross
  assert not os.path.exists(os.path.join(REPO, "~"))

  result = _visualize(f"--workdir={trained_workdir}", "--text=x", f"--out={out}", "--kind=self")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "tx_jax.visualize: --kind=self is not one of" in result.stderr


def test_attention_image_goes_to_tensorboard(restored, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  config, graphdef, params, processor = restored
  image = attention_plots.attention_image(graphdef, params, config, processor, TEXT)
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
  writer = metrics.MetricWriter(str(tmp_path))
  writer.image(7, "eval/attention", image)
  writer.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  acc.Reload()
  (event,) = acc.Images("eval/attention")
  assert (event.step, event.height, event.width) == (7, image.shape[0], image.shape[1])
