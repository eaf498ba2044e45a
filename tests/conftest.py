"""Shared fixtures: a small real de->en corpus and a tiny, fast training config."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # so `configs` imports like it does under `python -m` from the repo root
# The tiny test models compile in well under JAX's 1 s threshold for the persistent compilation cache
# (tx_jax.compilation_cache, kept in each test session's data cache): cache them all, so the many
# processes that train the same tiny config (faults, multi-process, CLI tests) load rather than compile.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


@pytest.fixture(scope="session")
def data_cache_dir():
  """Where fetched corpora are cached across test runs (shared with `make demo`)."""
  return os.path.expanduser(os.environ.get("TX_JAX_DATA_CACHE", "~/.cache/tx_jax"))


@pytest.fixture(scope="session")
def libreoffice_pairs(data_cache_dir):
  """The real LibreOffice help en-de pairs (fetched through apt-get on first use)."""
  from tx_jax.data import libreoffice
  return libreoffice.load_libreoffice_help(data_cache_dir, language="de")


@pytest.fixture(scope="session")
def small_corpus_dir(tmp_path_factory, libreoffice_pairs):
  """A slice of the real corpus in the text_files layout: 3000/64/64 pairs, German -> English."""
  from tx_jax.data import text_files
  d = str(tmp_path_factory.mktemp("corpus"))
  sizes = {"train": 3000, "validation": 64, "test": 64}
  subset = {split: [(de, en) for en, de in libreoffice_pairs[split][:n]] for split, n in sizes.items()}
  text_files.write_text_files(d, subset, "de", "en")
  return d


def make_tiny_config(corpus_dir, vocab_dir, **overrides):
  """configs/default.py shrunk to a model and run that train in seconds on the small corpus."""
  from configs import default
  config = default.get_config()
  config.dataset = "text_files"
  config.data_dir = corpus_dir
  config.vocab_path = os.path.join(vocab_dir, "spm_500.model")
  config.data_cache_dir = os.path.join(vocab_dir, "data_cache")  # the corpus's ArrayRecord shards
  config.vocab_size = 500
  config.emb_dim = 32
  config.num_heads = 2
  config.mlp_dim = 64
  config.num_encoder_layers = 1
  config.num_decoder_layers = 1
  config.max_target_length = 64
  config.max_eval_target_length = 64
  config.max_predict_length = 24
  config.per_device_batch_size = 8
  config.num_train_steps = 6
  config.warmup_steps = 2
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.num_eval_steps = 2
  config.num_predict_sentences = 8
  config.data_workers = 0  # in-process pipeline: no worker start-up per test (one test runs workers)
  config.eval_batch_size = 8
  config.beam_size = 2
  config.update(overrides)
  return config


def make_tiny_encoder_config(vocab_dir, task, **overrides):
  """configs/bert_mlm_default.py (task "mlm") or bert_cls_default.py shrunk to train in seconds."""
  from configs import bert_cls_default, bert_mlm_default
  config = (bert_mlm_default if task == "mlm" else bert_cls_default).get_config()
  config.vocab_path = os.path.join(vocab_dir, "rt_enc_600.model")
  config.update(vocab_size=600, emb_dim=32, num_heads=2, mlp_dim=64, num_encoder_layers=1, num_train_steps=4,
                warmup_steps=1, log_every_steps=2, eval_every_steps=4, checkpoint_every_steps=4, num_eval_steps=2,
                per_device_batch_size=8, learning_rate=0.003, data_workers=0)
  config.update(overrides)
  return config


def tiny_config_file(tmp_path, small_corpus_dir, vocab_dir, **overrides) -> str:
  """A config file for `python -m tx_jax.train --config=...` returning make_tiny_config(...) with `overrides`."""
  path = tmp_path / "tiny_config.py"
  path.write_text(
    "import sys\n"
    f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
    "from conftest import make_tiny_config\n\n\n"
    "def get_config():\n"
    f"  return make_tiny_config({small_corpus_dir!r}, {vocab_dir!r}, **{overrides!r})\n")
  return str(path)


def with_fields(config, **fields):
  """A copy of `config` with `fields` set (the config itself is left as it is)."""
  config = config.copy_and_resolve_references()
  config.update(fields)
  return config


def straight_and_resumed_runs(config, tmp_path, stop_at: int = 3) -> tuple[str, str]:
  """Workdirs of an uninterrupted run of `config` and of one stopped after `stop_at` steps and restarted."""
  from tx_jax import train
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train_and_evaluate(config, straight)
  train.train_and_evaluate(with_fields(config, num_train_steps=stop_at), resumed)
  train.train_and_evaluate(config, resumed)
  return straight, resumed


def train_step_compiles(run, caplog, name: str = "jit(train_step)") -> list:
  """The 'Compiling {name}' log lines of `run()` (name "": any), the compile-ahead thread's included: one per compile."""
  import logging
  import jax
  jax.config.update("jax_log_compiles", True)  # process-wide: jax.log_compiles() would miss other threads
  try:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
      run()
  finally:
    jax.config.update("jax_log_compiles", False)
  return [r.getMessage()[:80] for r in caplog.records if f"Compiling {name}" in r.getMessage()]


def first_train_batch(config, global_rows: int, **kw) -> dict:
  """The first training batch of the config's task (its vocabulary trained first if missing)."""
  from tx_jax import tasks
  task = tasks.get(config)
  return next(task.train_batches(config, task.tokenizer(config, train=True), global_rows=global_rows, **kw))


@pytest.fixture(scope="session")
def vocab_dir(tmp_path_factory):
  """One SentencePiece model shared by the tests (trained on first use)."""
  return str(tmp_path_factory.mktemp("vocab"))


@pytest.fixture
def tiny_config(small_corpus_dir, vocab_dir):
  """A fresh tiny config per test."""
  return make_tiny_config(small_corpus_dir, vocab_dir)
