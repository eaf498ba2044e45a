"""Parameter EMA: the recurrence, checkpointed and resumed exactly, used by evaluate and decoding (real tiny runs)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import make_tiny_config, straight_and_resumed_runs
from tx_jax import errors, evaluate, parallel, train, translate
from tx_jax.inference import restore
from tx_jax.training import checkpoint, ema, experiment


def test_ema_follows_its_recurrence_with_a_warming_decay():
  decay = 0.9
  tx = optax.chain(optax.sgd(0.1), ema.ema_of_params(decay))
  params = {"w": jnp.array([1.0, -2.0])}
  state = tx.init(params)
  expected = np.array([1.0, -2.0])
  for t in range(12):
    grads = {"w": jnp.array([0.5, 1.0]) * (t + 1)}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    rate = min(decay, (1 + t) / (10 + t))
    expected = rate * expected + (1 - rate) * np.asarray(params["w"])
  np.testing.assert_allclose(ema.find(state).ema["w"], expected, rtol=1e-6)
  assert int(ema.find(state).count) == 12
  assert ema.find(optax.adam(1e-3).init(params)) is None


def _restore(config, workdir):
  mesh = parallel.make_mesh(config.mesh_shape)
  _, abstract, _, eval_fn = experiment.build(config, mesh, abstract_only=True)
  state, _ = checkpoint.restore(checkpoint.make_manager(workdir, read_only=True), abstract)
  return state, eval_fn


@pytest.fixture(scope="module")
def ema_config(small_corpus_dir, vocab_dir):
  return make_tiny_config(small_corpus_dir, vocab_dir, ema_decay=0.9, dropout_rate=0.1)


def test_ema_is_checkpointed_and_a_restarted_run_ends_with_the_same_average(ema_config, tmp_path):
  straight, resumed = straight_and_resumed_runs(ema_config, tmp_path)
  a, _ = _restore(ema_config, straight)
  b, _ = _restore(ema_config, resumed)
  assert int(ema.find(a.opt_state).count) == int(ema.find(b.opt_state).count) == ema_config.num_train_steps
  for x, y, p in zip(jax.tree.leaves(ema.find(a.opt_state).ema), jax.tree.leaves(ema.find(b.opt_state).ema),
                     jax.tree.leaves(a.params)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert x.sharding == p.sharding  # sharded like its parameter
  assert any(not np.allclose(x, p) for x, p in zip(jax.tree.leaves(ema.find(a.opt_state).ema),
                                                    jax.tree.leaves(a.params)))


def test_evaluate_and_translate_use_the_ema_unless_told_not_to(ema_config, tmp_path):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(ema_config, workdir)
  state, eval_fn = _restore(ema_config, workdir)
  with_ema = evaluate.evaluate(ema_config, workdir, split="test", max_sentences=4)
  raw = evaluate.evaluate(ema_config, workdir, split="test", max_sentences=4, use_ema=False)
  assert with_ema["ema"] and not raw["ema"]
  assert with_ema["metrics"]["test/loss"] != pytest.approx(raw["metrics"]["test/loss"], rel=1e-6)
  # Decoding and attention tools get the EMA by default, the raw parameters on request.
  config, _, params, _ = restore.restore_for_inference(workdir)
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(ema.find(state.opt_state).ema)):
    np.testing.assert_array_equal(x, y)
  _, _, raw_params, _ = restore.restore_for_inference(workdir, use_ema=False)
  for x, y in zip(jax.tree.leaves(raw_params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(x, y)
  lines = ["Klicken Sie auf OK.", ""]
  assert len(translate.translate_lines(workdir, lines, beam_size=1)) == 2
  for flag, text in ((dict(batch_size=-1), "--batch_size=-1 must be at least 1"),  # was: empty lines, exit 0
                     (dict(beam_size=0), "--beam_size=0 must be at least 1")):  # was: the run's beam, silently
    with pytest.raises(errors.ConfigError, match=text):
      translate.translate_lines(workdir, lines, **flag)
