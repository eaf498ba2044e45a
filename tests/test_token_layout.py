"""Training without the padding: the layouts' tokens give the padded model's loss and gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import first_train_batch, train_step_compiles
from tx_jax import configuration, errors, parallel, tasks
from tx_jax.models.config import ModelConfig
from tx_jax.models.encoder_decoder import EncoderDecoder
from tx_jax.models.encoder_only import EncoderOnly
from tx_jax.models.token_layout import TokenLayout, all_fit, capacity_for
from tx_jax.tasks.classification import Classification
from tx_jax.tasks.translation import Translation
from tx_jax.training import experiment, losses, metrics, padding_choice

VOCAB, ROWS, LENGTH = 64, 8, 12


def _batch(seed=0):
  """A translation batch of unpacked rows, each padded after its own length (as tx_jax's task lays them out)."""
  rng = np.random.default_rng(seed)
  batch = {}
  for key in ("inputs", "targets"):
    lengths = rng.integers(3, LENGTH + 1, ROWS)
    valid = np.arange(LENGTH)[None] < lengths[:, None]
    batch[key] = np.where(valid, rng.integers(4, VOCAB, (ROWS, LENGTH)), 0).astype(np.int32)
    batch[f"{key}_segment_ids"] = valid.astype(np.int32)
    batch[f"{key}_positions"] = (np.arange(LENGTH)[None] * valid).astype(np.int32)
  batch["decoder_inputs"] = np.concatenate([np.full((ROWS, 1), 3), batch["targets"][:, :-1]], 1).astype(np.int32)
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _first_rows(batch: dict, share: float) -> dict:
  """`batch` with every row after the first `share` of them emptied (all features zero, so all padding)."""
  return {k: np.where(np.arange(len(v)).reshape(-1, *[1] * (v.ndim - 1)) < len(v) * share, v, 0)
          for k, v in batch.items()}


def _fullest_group(segments, groups: int) -> int:
  """Real tokens of the fullest of `groups` groups of rows: the tightest capacity that fits."""
  return int(np.asarray(segments).reshape(groups, -1).sum(1).max())


def test_unpad_then_pad_keeps_the_real_tokens_and_zeros_the_padding():
  batch = _batch()
  segments = batch["targets_segment_ids"]
  x = jnp.asarray(np.random.default_rng(1).normal(size=(ROWS, LENGTH, 5)), jnp.float32)
  for groups in (1, 2, 4):
    real = _fullest_group(segments, groups)
    layout = TokenLayout.of(segments, groups, real)
    tokens = layout.unpad(x)
    assert tokens.shape == (groups * real, 5)
    np.testing.assert_array_equal(layout.pad(tokens), x * segments[..., None])
    assert bool(TokenLayout.fits(segments, groups, real)) and not bool(TokenLayout.fits(segments, groups, real - 1))


@pytest.mark.parametrize("kw", [{}, dict(num_kv_heads=2), dict(positions="rope", norm_position="post")])
def test_tokens_without_padding_give_the_padded_loss_and_gradients(kw):
  cfg = ModelConfig(vocab_size=VOCAB, emb_dim=32, num_heads=4, mlp_dim=64, num_encoder_layers=2,
                    num_decoder_layers=2, dropout_rate=0.0, attention_dropout_rate=0.0, **kw)
  graphdef, params = nnx.split(EncoderDecoder(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  batch = _batch()

  def loss(params, groups):
    layouts = None
    if groups:  # the tightest capacity: the fullest group fills it
      layouts = {k: TokenLayout.of(batch[f"{k}_segment_ids"], groups,
                                   _fullest_group(batch[f"{k}_segment_ids"], groups))
                 for k in ("inputs", "targets")}
    sums = Translation._sums(nnx.merge(graphdef, params), batch, 0.1, True, None, layouts)
    return sums["loss"], sums

  loss_and_grads = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)  # as the train step: compiled
  (padded, padded_sums), padded_grads = loss_and_grads(params, 0)
  for groups in (1, 2):
    (got, sums), grads = loss_and_grads(params, groups)
    assert float(sums["tokens"]) == float(padded_sums["tokens"]) == float(batch["targets_segment_ids"].sum())
    np.testing.assert_allclose(got, padded, rtol=1e-5)
    # Against the largest gradient: the attention key biases' gradients are zero up to rounding in both.
    scale = max(float(jnp.abs(p).max()) for p in jax.tree.leaves(padded_grads))
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(padded_grads), strict=True):
      np.testing.assert_allclose(g, p, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("kw", [dict(positions="learned", num_token_types=2, embedding_norm=True, norm_position="post",
                                     pooler=True), dict(num_kv_heads=2)], ids=["bert", "grouped_query"])
def test_classification_without_padding_gives_the_padded_loss_and_gradients(kw):
  # A pad id that is not 0, and real tokens of id 0: the rows' segment ids, not their ids, mark the padding.
  pad_id = VOCAB - 1
  cfg = ModelConfig(vocab_size=VOCAB, emb_dim=32, num_heads=4, mlp_dim=64, num_encoder_layers=2,
                    num_decoder_layers=0, num_classes=3, dropout_rate=0.0, attention_dropout_rate=0.0, pad_id=pad_id,
                    **kw)
  graphdef, params = nnx.split(EncoderOnly(cfg, rngs=nnx.Rngs(0)), nnx.Param)
  unpacked = _batch()
  segments = unpacked["inputs_segment_ids"]
  tokens = jnp.where(segments != 0, unpacked["inputs"] % 5, pad_id)  # ids 0-4, some of them 0
  batch = {"inputs": tokens, "inputs_segment_ids": segments, "labels": jnp.arange(ROWS, dtype=jnp.int32) % 3}
  assert bool(((tokens == 0) & (segments != 0)).any())
  fill = float(segments.mean())

  def loss(params, capacity):
    sums = Classification().metric_sums(nnx.merge(graphdef, params), batch, label_smoothing=0.1, deterministic=True,
                                        token_capacity=capacity)
    return sums["loss"], sums

  loss_and_grads = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)  # as the train step: compiled
  (padded, padded_sums), padded_grads = loss_and_grads(params, None)
  # the padded step's loss is each row's alone, without its padding
  classify = jax.jit(lambda params, row: nnx.merge(graphdef, params).classify(row))
  alone = [classify(params, tokens[r:r + 1, :int(segments[r].sum())]) for r in range(ROWS)]
  expected = losses.classification_sums(jnp.concatenate(alone), batch["labels"], 0.1)["loss"]
  np.testing.assert_allclose(padded, expected, rtol=1e-5)
  scale = max(float(jnp.abs(p).max()) for p in jax.tree.leaves(padded_grads))
  for capacity, over in (((1, 0.99, True), 0.0), ((2, 0.99, None), 0.0), ((2, fill / 2, None), 1.0)):
    (got, sums), grads = loss_and_grads(params, capacity)
    assert float(sums["over_capacity"]) == over and float(sums["tokens"]) == ROWS
    np.testing.assert_allclose(got, padded, rtol=1e-5)
    for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(padded_grads), strict=True):
      np.testing.assert_allclose(g, p, rtol=1e-4, atol=1e-6 * scale)


def test_a_batch_over_the_capacity_takes_the_padded_step():
  cfg = ModelConfig(vocab_size=VOCAB, emb_dim=32, num_heads=4, mlp_dim=64, num_encoder_layers=1,
                    num_decoder_layers=1, dropout_rate=0.0, attention_dropout_rate=0.0)
  model, batch = EncoderDecoder(cfg, rngs=nnx.Rngs(0)), _batch()
  fill = float(batch["targets_segment_ids"].mean())
  padded = Translation().metric_sums(model, batch, label_smoothing=0.1, deterministic=True)
  for fraction, over in ((fill / 2, 1.0), (0.99, 0.0)):  # too small: the padded branch; all slots: the layouts'
    host_fits = all_fit(Translation().padding_segments(jax.device_get(batch)), 2, fraction)  # numpy, as on the host
    assert isinstance(host_fits, np.bool_) and bool(host_fits) == (over == 0.0)
    for fits in (None, bool(host_fits)):  # decided on the device (lax.cond), then by the host
      sums = jax.jit(lambda b, f=fraction, fits=fits: Translation().metric_sums(
        model, b, label_smoothing=0.1, deterministic=True, token_capacity=(2, f, fits)))(batch)
      np.testing.assert_allclose(sums["loss"], padded["loss"], rtol=1e-5)
      assert float(sums["tokens"]) == float(padded["tokens"])
      assert float(sums["over_capacity"]) == over  # which computation ran; train/over_capacity in TensorBoard
      summary = metrics.summarize(dict(sums, steps=1.0, grad_norm=0.0, learning_rate=0.0), "train")
      assert summary["train/over_capacity"] == over
  assert capacity_for(ROWS, LENGTH, 2, fill / 2) < ROWS // 2 * LENGTH * fill


def test_the_host_counts_each_microbatch_as_the_step_splits_it():
  batch = jax.device_get(_batch())
  for key in ("inputs", "targets"):  # rows 0, 2, 4, 6 full, 1, 3, 5, 7 empty: microbatch 0 of 2 is all tokens
    batch[f"{key}_segment_ids"] = np.repeat([[1], [0]], ROWS // 2, axis=1).T.reshape(ROWS, 1) * np.ones(LENGTH, int)
  assert padding_choice.batch_fits(Translation(), batch, groups=2, fraction=0.5, grad_accum_steps=1)
  assert not padding_choice.batch_fits(Translation(), batch, groups=2, fraction=0.5, grad_accum_steps=2)
  assert padding_choice.batch_fits(Translation(), batch, groups=2, fraction=1.0, grad_accum_steps=2)


def test_the_host_runs_the_padded_step_only_for_batches_over_the_capacity(tiny_config, caplog):
  """tx_jax.train's steps with token_capacity: the step compiled ahead skips the padding, the padded one compiles once."""
  tiny_config.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  mesh = parallel.make_mesh(tiny_config.mesh_shape)
  full = first_train_batch(tiny_config, parallel.global_rows(tiny_config))  # packed rows: nearly every slot
  half = _first_rows(full, 0.5)
  tiny_config.token_capacity = 1.0  # every batch padded
  plain_config = tiny_config.copy_and_resolve_references()
  tiny_config.token_capacity = 0.6
  _, state, train_fn, _ = experiment.build(tiny_config, mesh, compile_ahead=True)
  _, plain_state, plain_fn, _ = experiment.build(plain_config, mesh)
  assert isinstance(train_fn, padding_choice.ChosenOnHost)
  for batch, over, compiles in ((half, 0.0, 0), (full, 1.0, 1), (full, 1.0, 0), (half, 0.0, 0)):
    out = {}
    compiled = train_step_compiles(lambda b=batch: out.update(step=train_fn(state, parallel.global_batch(b, mesh))),
                                   caplog)
    assert len(compiled) == compiles, compiled  # the padded step compiles at the first batch that needs it
    state, sums = out["step"]
    plain_state, plain_sums = plain_fn(plain_state, parallel.global_batch(batch, mesh))
    assert float(sums["over_capacity"]) == over
    assert float(sums["tokens"]) == float(plain_sums["tokens"]) == float((batch["targets_segment_ids"] != 0).sum())
    np.testing.assert_allclose(float(sums["loss"]), float(plain_sums["loss"]), rtol=1e-4)


def test_pmap_steps_are_lowered_and_timed_apart_like_jit_ones(tiny_config, caplog):
  """pmap: the fixed share's step compiles ahead, the padded one before its first call (timed apart), as under jit."""
  tiny_config.update(dropout_rate=0.0, attention_dropout_rate=0.0, parallelism="pmap", mesh_shape=(-1, 1, 1))
  mesh = parallel.make_mesh(tiny_config.mesh_shape)
  full = first_train_batch(tiny_config, parallel.global_rows(tiny_config))
  tiny_config.token_capacity = 1.0
  _, plain_state, plain_fn, _ = experiment.build(tiny_config.copy_and_resolve_references(), mesh)
  tiny_config.token_capacity = 0.6
  _, state, train_fn, _ = experiment.build(tiny_config, mesh, compile_ahead=True)
  assert isinstance(train_fn, padding_choice.ChosenOnHost)
  for batch, over, new_step in ((_first_rows(full, 0.5), 0.0, False), (full, 1.0, True), (full, 1.0, False),
                                (_first_rows(full, 0.5), 0.0, False)):
    global_batch, out = parallel.global_batch(batch, mesh), []
    compiled = train_step_compiles(lambda: out.append(train_fn(state, global_batch)), caplog, name="")  # any compile
    state, sums = out[0]
    assert bool(compiled) == new_step, compiled  # the fixed share's step (and reshape) compiled ahead, the padded here
    assert (train_fn.take_compile_seconds() > 0) == new_step
    plain_state, plain_sums = plain_fn(plain_state, parallel.global_batch(batch, mesh))
    assert float(sums["over_capacity"]) == over
    np.testing.assert_allclose(float(sums["loss"]), float(plain_sums["loss"]), rtol=1e-4)
  # What the train fn relies on: a pmap step lowered and compiled for a batch does not compile again when called
  # (any compile counts, whatever this jax names pmap's); a step called without it does.
  batch = _first_rows(full, 0.25)
  for lowered_first in (False, True):
    _, state, fresh_fn, _ = experiment.build(tiny_config, mesh)
    step, global_batch = fresh_fn.step(0.6), parallel.global_batch(batch, mesh)
    if lowered_first:
      step.lower(state, global_batch).compile()
    compiled = train_step_compiles(lambda s=step, st=state, b=global_batch: s(st, b), caplog, name="")
    assert bool(compiled) != lowered_first, compiled


def test_auto_picks_the_smallest_sixteenth_that_holds_the_fullest_group_of_each_microbatch():
  assert [padding_choice.auto_share(n) for n in (0.0, 0.05, 0.75, 12 / 16 * (1 + 1e-12), 0.7651, 0.875)] == [
    1 / 16, 1 / 16, 0.75, 0.8125, 0.8125, 0.875]  # exact: a hair over 12/16 needs 13/16
  assert padding_choice.auto_share(0.8751) is None and padding_choice.auto_share(1.0) is None  # the padded step
  batch = jax.device_get(_batch())
  for key in ("inputs", "targets"):  # rows 0, 2, 4, 6 full, 1, 3, 5, 7 empty: microbatch 0 of 2 is all tokens
    batch[f"{key}_segment_ids"] = np.repeat([[1], [0]], ROWS // 2, axis=1).T.reshape(ROWS, 1) * np.ones(LENGTH, int)
  needed = lambda groups, accum: padding_choice.needed_share(Translation(), batch, groups=groups,
                                                              grad_accum_steps=accum)
  assert (needed(1, 1), needed(2, 1), needed(1, 2), needed(2, 2)) == (0.5, 0.5, 1.0, 1.0)
  batch["targets_segment_ids"][0] = 0  # the fullest group of the fullest side sets the share
  assert (needed(1, 1), needed(2, 1), needed(4, 1)) == (0.5, 0.5, 0.5)
  batch["inputs_segment_ids"][0] = 0
  assert (needed(1, 1), needed(2, 1), needed(4, 1)) == (3 / 8, 0.5, 0.5)


def test_the_auto_share_always_fits():
  rng = np.random.default_rng(0)
  for _ in range(300):
    groups, accum = int(rng.choice([1, 2, 4])), int(rng.choice([1, 2]))
    rows, length = groups * accum * int(rng.integers(1, 5)), int(rng.integers(1, 40))
    batch = {f"{k}_segment_ids": (rng.random((rows, length)) < rng.random()).astype(np.int32)
             for k in ("inputs", "targets")}
    share = padding_choice.auto_share(padding_choice.needed_share(Translation(), batch, groups=groups,
                                                                  grad_accum_steps=accum))
    fits = padding_choice.batch_fits(Translation(), batch, groups=groups, fraction=share or 1.0,
                                     grad_accum_steps=accum)
    assert fits and (share is None or share <= 14 / 16)


def test_evaluation_may_override_auto_with_a_number(tmp_path):
  (tmp_path / "config.json").write_text('{"token_capacity": "auto", "emb_dim": 32}')
  given = ml_collections.ConfigDict({"token_capacity": 1.0, "emb_dim": 32})
  assert experiment.evaluation_config(str(tmp_path), given, overridden=("token_capacity",)).token_capacity == 1.0


def test_auto_compiles_a_step_per_share_that_occurs_and_matches_the_padded_step(tiny_config, caplog):
  """tx_jax.train's steps with token_capacity="auto": each share compiles once, the padded one ahead; same losses."""
  tiny_config.update(dropout_rate=0.0, attention_dropout_rate=0.0)
  mesh = parallel.make_mesh(tiny_config.mesh_shape)
  full = first_train_batch(tiny_config, parallel.global_rows(tiny_config))  # packed rows: nearly every slot

  tiny_config.token_capacity = 1.0  # every batch padded
  plain_config = tiny_config.copy_and_resolve_references()
  tiny_config.token_capacity = "auto"  # the default
  configuration.validate(tiny_config)
  _, state, train_fn, _ = experiment.build(tiny_config, mesh, compile_ahead=True)
  _, plain_state, plain_fn, _ = experiment.build(plain_config, mesh)
  assert isinstance(train_fn, padding_choice.ChosenOnHost)
  groups = parallel.batch_shards(mesh)
  for batch, over, compiles in ((_first_rows(full, 0.5), 0.0, 1), (full, 1.0, 0), (_first_rows(full, 0.25), 0.0, 1),
                                (_first_rows(full, 0.5), 0.0, 0)):
    share = padding_choice.auto_share(padding_choice.needed_share(Translation(), batch, groups=groups,
                                                                  grad_accum_steps=1))
    assert (share is None) == (over == 1.0)
    out = {}
    compiled = train_step_compiles(lambda b=batch: out.update(step=train_fn(state, parallel.global_batch(b, mesh))),
                                   caplog)
    assert len(compiled) == compiles, compiled  # ahead (padded) and the first share; then a new share only
    assert (train_fn.take_compile_seconds() > 0) == (compiles == 1)  # left out of the window's throughput
    state, sums = out["step"]
    plain_state, plain_sums = plain_fn(plain_state, parallel.global_batch(batch, mesh))
    assert float(sums["over_capacity"]) == over
    assert float(sums["tokens"]) == float(plain_sums["tokens"]) == float((batch["targets_segment_ids"] != 0).sum())
    np.testing.assert_allclose(float(sums["loss"]), float(plain_sums["loss"]), rtol=1e-4)


def test_auto_computes_the_padding_with_several_processes_or_for_tasks_that_keep_it(tiny_config, monkeypatch):
  built = lambda capacity: ("step", capacity)
  args = dict(fraction="auto", step_groups=1, groups=1, grad_accum_steps=1)
  assert isinstance(padding_choice.train_fn(built, task=Translation(), **args), padding_choice.ChosenOnHost)
  tiny_config.task = "lm"
  assert tiny_config.token_capacity == "auto"  # the default, valid for every task
  configuration.validate(tiny_config)
  assert padding_choice.train_fn(built, task=tasks.get(tiny_config), **args) == ("step", None)
  monkeypatch.setattr(jax, "process_count", lambda: 2)  # no host sees a whole batch
  assert padding_choice.train_fn(built, task=Translation(), **args) == ("step", None)


def test_token_capacity_is_for_tasks_that_skip_padding(tiny_config):
  tiny_config.token_capacity = 0.8
  configuration.validate(tiny_config)  # translation
  tiny_config.task = "lm"
  with pytest.raises(errors.ConfigError, match=r"config\.token_capacity=0\.8 must be 1\.0 for config\.task='lm': "
                                                 r"only classification and translation skip padding"):
    configuration.validate(tiny_config)
