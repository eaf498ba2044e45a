"""The train step compiled on a thread during init is the one the first real step runs: it never compiles twice."""

import jax
import jax.numpy as jnp
import pytest

from conftest import first_train_batch, make_tiny_config, make_tiny_encoder_config, train_step_compiles, with_fields
from tx_jax import parallel, train
from tx_jax.training import compile_ahead, experiment


def _train_step_compiles_at_first_call(config, caplog, ahead: bool = True, sums=None) -> list:
  """The 'Compiling jit(train_step)' log lines of the first step after experiment.build(config, compile_ahead=...).

  Under parallelism="pmap" every compile counts (this jax logs pmap's step under an internal name).
  `sums`, if given, receives the step's metric sums.
  """
  mesh = parallel.make_mesh(config.mesh_shape)
  _, state, train_fn, _ = experiment.build(config, mesh, compile_ahead=ahead)
  batch = parallel.global_batch(first_train_batch(config, parallel.global_rows(config)), mesh)
  return train_step_compiles(lambda: (sums if sums is not None else {}).update(
    jax.block_until_ready(train_fn(state, batch))[1]), caplog,
    **({"name": ""} if config.get("parallelism") == "pmap" else {}))


_PMAP = {"parallelism": "pmap", "mesh_shape": (-1, 1, 1)}


@pytest.mark.parametrize("overrides", [{}, {"grad_accum_steps": 2}, {"task": "lm"}, {"token_capacity": 0.99}, _PMAP],
                         ids=["translation", "grad_accum", "lm", "token_capacity", "pmap"])
def test_first_step_runs_the_step_compiled_ahead(small_corpus_dir, vocab_dir, tmp_path, caplog, overrides):
  config = make_tiny_config(small_corpus_dir, vocab_dir, **overrides)
  if overrides.get("task") == "lm":
    config.update(source_language="", target_language="en", num_encoder_layers=0, vocab_path=str(tmp_path / "lm.model"))
  assert _train_step_compiles_at_first_call(config, caplog) == []


@pytest.mark.parametrize("task, overrides", [("mlm", {}), ("cls", {"token_capacity": 1.0}),
                                            ("cls", {"token_capacity": 0.99})],
                         ids=["mlm", "cls", "cls_token_capacity"])
def test_encoder_tasks_run_the_step_compiled_ahead(vocab_dir, caplog, task, overrides):
  assert _train_step_compiles_at_first_call(make_tiny_encoder_config(vocab_dir, task, **overrides), caplog) == []


def test_auto_compiles_the_padded_step_ahead_and_a_sparse_first_batch_its_share(vocab_dir, caplog):
  # token_capacity="auto" (the default) cannot know a batch's share before it comes: ahead it compiles
  # the padded step, which packed rows run (the tests above); classification's one-snippet rows
  # (about half padding) run a step without the padding, compiled at the first step.
  config = make_tiny_encoder_config(vocab_dir, "cls")
  assert config.token_capacity == "auto"
  sums = {}
  assert len(_train_step_compiles_at_first_call(config, caplog, sums=sums)) == 1
  assert float(sums["over_capacity"]) == 0.0  # it ran without the padding


@pytest.mark.parametrize("overrides", [{}, _PMAP], ids=["jit", "pmap"])
def test_without_compile_ahead_the_first_step_compiles(tiny_config, caplog, overrides):
  # The checks above can fail: the same call logs its compile when nothing was compiled ahead.
  tiny_config.update(overrides)
  compiles = _train_step_compiles_at_first_call(tiny_config, caplog, ahead=False)
  if overrides:  # pmap's step itself, not only its batch's reshape (jit(<lambda>)), is among the compiles seen
    assert any("<lambda>" not in c for c in compiles), compiles
  else:
    assert len(compiles) == 1


def test_a_run_and_its_resumption_compile_the_train_step_once_each_and_a_finished_run_not_at_all(
    tiny_config, tmp_path, caplog):
  tiny_config.num_predict_sentences = 0
  first_part = with_fields(tiny_config, num_train_steps=3)
  # Steps 1..3; resumed from step 3's checkpoint (a restored state) to 6; run again with no step left.
  compiles = [len(train_step_compiles(lambda c=config: train.train_and_evaluate(c, str(tmp_path / "run")), caplog))
              for config in (first_part, tiny_config, tiny_config)]
  assert compiles == [1, 1, 0]


def test_an_ahead_compile_that_fails_leaves_its_error_to_the_real_call():
  @jax.jit
  def step(x):
    if x.shape[0] != 3:
      raise ValueError(f"rows {x.shape[0]}: this step takes 3")  # raised while tracing, as a shape error would be
    return x * 2

  ran = []
  with compile_ahead.compiling(step, jax.ShapeDtypeStruct((2,), jnp.float32), name="step"):
    ran.append(True)  # the block runs, and its end neither raises nor loses the thread's error for good
  assert ran == [True]
  with pytest.raises(ValueError, match="rows 2"):
    step(jnp.ones(2))
