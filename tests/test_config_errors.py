"""Every invalid config value or override fails in one line naming the field, before anything compiles."""

import concurrent.futures
import dataclasses
import os
import subprocess
import sys

import pytest

from configs import base
from tx_jax import errors
from tx_jax.models.config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (command-line arguments after --config=configs/default.py, the text the one line must contain)
BAD = [
  (["--config.num_heads=3"], "config.emb_dim"),
  (["--config.learning_rate=-0.1"], "config.learning_rate"),
  (["--config.positions=absolute"], "config.positions"),
  (["--config.emb_dimm=3"], "config.emb_dimm is not a config field (did you mean config.emb_dim?)"),
  (["--config.emb_dim=abc"], "--config.emb_dim=abc"),
  (["--config.use_bias=maybe"], "--config.use_bias=maybe"),
  (["--config.task=nmt"], "config.task"),
  (["--config.dataset=wmt"], "config.dataset"),
  (["--config.norm=batchnorm"], "config.norm"),
  (["--config.norm_position=middle"], "config.norm_position"),
  (["--config.activation=tanh"], "config.activation"),
  (["--config.schedule=linear"], "config.schedule"),
  (["--config.dtype=float16"], "config.dtype"),
  (["--config.parallelism=dp"], "config.parallelism"),
  (["--config.remat_policy=some"], "config.remat_policy"),
  (["--config.attention_impl=flash"], "config.attention_impl"),
  (["--config.sinusoidal_timescales=fairseq"], "config.sinusoidal_timescales"),
  (["--config.vocab_size=0"], "config.vocab_size"),
  (["--config.vocab_size=8"], "config.vocab_size"),
  (["--config.per_device_batch_size=0"], "config.per_device_batch_size"),
  (["--config.num_train_steps=-5"], "config.num_train_steps"),
  (["--config.max_target_length=0"], "config.max_target_length"),
  (["--config.max_len=64"], "config.max_len"),
  (["--config.max_checkpoints_to_keep=0"], "config.max_checkpoints_to_keep"),
  (["--config.max_checkpoints_to_keep=-1"], "config.max_checkpoints_to_keep"),
  (["--config.dropout_rate=1.5"], "config.dropout_rate"),
  (["--config.attention_dropout_rate=-0.1"], "config.attention_dropout_rate"),
  (["--config.label_smoothing=1.0"], "config.label_smoothing"),
  (["--config.adam_b2=1.0"], "config.adam_b2"),
  (["--config.num_kv_heads=3"], "config.num_kv_heads"),
  (["--config.num_kv_heads=-1"], "config.num_kv_heads"),
  (["--config.warmup_steps=-1"], "config.warmup_steps"),
  (["--config.weight_decay=-0.5"], "config.weight_decay"),
  (["--config.grad_clip_norm=-1"], "config.grad_clip_norm"),
  (["--config.mesh_shape=(2,2)"], "config.mesh_shape"),
  (["--config.parallelism=pmap", "--config.mesh_shape=(1,2,1)"], "config.mesh_shape"),
  (["--config.grad_accum_steps=3"], "config.grad_accum_steps"),
  (["--config.target_language=de"], "config.target_language"),
  (["--config.model_family=decoder_only"], "config.model_family"),
  (["--config.num_encoder_layers=0"], "config.num_encoder_layers"),
  (["--config.num_eval_steps=0"], "config.num_eval_steps"),
  (["--config.data_shards=-1"], "config.data_shards"),
  (["--config.data_workers=-2"], "config.data_workers"),
  (["--config.best_metric=bleu"], "config.best_metric"),
  (["--config.best_metric=eval/bleu", "--config.num_predict_sentences=0"], "config.best_metric"),
  (["--config.train_minutes=-1.0"], "config.train_minutes"),
  (["--config.best_mode=up"], "config.best_mode"),
  (["--config.keep_best=0"], "config.keep_best"),
  (["--config.early_stopping_patience=3"], "config.early_stopping_patience"),
  (["--config.positions=rope", "--config.emb_dim=264", "--config.num_heads=8"], "config.positions"),
  (["--config.norm_epsilon=0"], "config.norm_epsilon"),
  (["--config.eval_every_steps=0"], "config.eval_every_steps"),
  (["--config.log_every_steps=0"], "config.log_every_steps"),
  (["--config.beam_size=0"], "config.beam_size"),
  (["--config.vocab_sample_sentences=0"], "config.vocab_sample_sentences"),
  (["--config.num_predict_sentences=-2"], "config.num_predict_sentences"),  # -1: the whole split
  (["--config.mlm_mask_rate=1.0"], "config.mlm_mask_rate"),
  (["--config.profile_steps=(5,2)"], "config.profile_steps"),
  (["--config.prng_impl=philox"], "config.prng_impl"),
  (["--config.task=classification", "--config.dataset=rotten_tomatoes"], "config.num_classes"),
]


def _train(args, workdir):
  return subprocess.run([sys.executable, "-m", "tx_jax.train", f"--workdir={workdir}", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def _assert_one_line(result, text):
  assert result.returncode != 0
  lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert len(lines) == 1 and text in lines[0], result.stderr[-2000:]


@pytest.mark.slow
def test_invalid_overrides_fail_in_one_line_before_compiling(tmp_path):
  assert len(BAD) >= 40
  runs = [(["--config=configs/default.py", *args], text, tmp_path / str(i)) for i, (args, text) in enumerate(BAD)]
  broken = tmp_path / "broken_config.py"  # the file's own mistake, not a missing field
  broken.write_text("from configs import default\n\n\ndef get_config():\n  return default.get_confg()\n")
  dividing = tmp_path / "dividing_config.py"
  dividing.write_text("def get_config():\n  return 1 / 0\n")
  runs += [(["--config=configs/nope.py"], "cannot load the config file configs/nope.py", tmp_path / "nope"),
           ([f"--config={broken}"], f"the config file {broken} failed at line 5: AttributeError: module "
            "'configs.default' has no attribute 'get_confg'", tmp_path / "broken"),
           ([f"--config={dividing}"], f"the config file {dividing} failed at line 2: ZeroDivisionError: division "
            "by zero", tmp_path / "dividing"),  # any error of its own, not only the types a bad override raises
           (["--config=configs/default.py"], "--workdir=/proc/tx_jax_run", "/proc/tx_jax_run")]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda run: _train(run[0], run[2]), runs))
  for (args, text, workdir), result in zip(runs, results):
    _assert_one_line(result, text)
    assert not os.path.exists(os.path.join(str(workdir), "checkpoints")), args  # nothing trained


def test_every_model_config_field_is_a_config_field_and_overridable(tmp_path):
  config = base.get_config()
  fields = [f.name for f in dataclasses.fields(ModelConfig)]
  assert not [f for f in fields if f not in config]
  overrides = {"attention_impl": "dot_product_attention", "scale_embeddings": "false", "final_norm": "true",
               "sinusoidal_timescales": "marian", "head_dim": "16", "rope_theta": "500000.0", "output_bias": "true",
               "mlm_head": "true", "pad_id": "0", "num_token_types": "2", "remat_policy": "dots_saveable",
               "logits_scale": "0.5", "norm_epsilon": "1e-5", "remat": "true", "scan_layers": "true"}
  args = [f"--config.{k}={v}" for k, v in overrides.items()]
  args += [f"--config.{f}={config[f]}" for f in fields if f not in overrides and config[f] is not None]
  # Every override parses; the run then stops at the one invalid field at the end, before any compile.
  result = _train(["--config=configs/default.py", *args, "--config.num_train_steps=0"], tmp_path / "run")
  _assert_one_line(result, "config.num_train_steps=0 must be a positive integer")


def test_every_shipped_config_is_valid():
  import importlib
  from tx_jax import configuration
  for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
    if name.endswith(".py") and not name.startswith("__"):
      configuration.validate(importlib.import_module(f"configs.{name[:-3]}").get_config())


def test_validate_names_the_field_in_process():
  from tx_jax import configuration
  config = base.get_config()
  config.max_len = 100
  with pytest.raises(errors.ConfigError, match=r"config.max_len=100 is smaller than config.max_target_length=128"):
    configuration.validate(config)


def test_checks_that_depend_on_other_fields_use_what_the_model_builds():
  from tx_jax import configuration
  config = base.get_config()
  config.update(positions="rope", emb_dim=264, num_heads=8, head_dim=32)  # 264 / 8 is odd, the heads are 32 wide
  configuration.validate(config)
  config.head_dim = 33  # got past the check, then failed inside apply_rope
  with pytest.raises(errors.ConfigError, match=r"config.positions='rope' needs an even head size .*33 here"):
    configuration.validate(config)
  config = base.get_config()
  config.update(task="mlm", dataset="rotten_tomatoes", source_language="", target_language="en", mlm_head=True,
                activation="swiglu")  # a KeyError deep in the model's trace before
  with pytest.raises(errors.ConfigError, match="config.activation='swiglu' is a gated feed-forward"):
    configuration.validate(config)
