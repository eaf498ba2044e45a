"""The persistent compilation cache: a second process training the same config loads its programs instead of compiling."""

import json
import os
import subprocess
import sys

from tx_jax import compilation_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A fresh process trains the tiny config and reports JAX's own compilation-cache events.
_SCRIPT = r"""
import collections, json, os, sys
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the tiny model compiles in well under 1 s
sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
import jax
events = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kw: events.update([event.rsplit("/", 1)[-1]]))
from conftest import make_tiny_config
from tx_jax import train
config = make_tiny_config({corpus!r}, {vocab!r}, num_train_steps=2, eval_every_steps=1000, checkpoint_every_steps=1000,
                          num_predict_sentences=0, data_cache_dir={cache!r}, **{overrides!r})
train.train_and_evaluate(config, {workdir!r})
print(json.dumps({{"dir": jax.config.jax_compilation_cache_dir, **events}}))
"""


def _train(small_corpus_dir, vocab_dir, data_cache, workdir, **overrides) -> dict:
  script = _SCRIPT.format(repo=REPO, corpus=small_corpus_dir, vocab=vocab_dir, cache=str(data_cache),
                          workdir=str(workdir), overrides=overrides)
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_run_loads_every_program_from_the_cache(small_corpus_dir, vocab_dir, tmp_path):
  data_cache = tmp_path / "data_cache"
  cold = _train(small_corpus_dir, vocab_dir, data_cache, tmp_path / "cold")
  assert cold["dir"] == str(data_cache / compilation_cache.CACHE_SUBDIR)
  assert cold.get("cache_misses", 0) > 0
  warm = _train(small_corpus_dir, vocab_dir, data_cache, tmp_path / "warm")
  assert warm.get("cache_hits", 0) == cold["cache_misses"] + cold.get("cache_hits", 0)
  assert not warm.get("cache_misses")
  off = _train(small_corpus_dir, vocab_dir, tmp_path / "other_cache", tmp_path / "off", compilation_cache=False)
  assert off["dir"] is None and not off.get("cache_hits") and not off.get("cache_misses")
