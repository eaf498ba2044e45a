"""A run keeps its vocabulary in its workdir: the tools, its resumption, init_from and an average read that copy."""

import json
import os

import pytest
from conftest import make_tiny_config

from tx_jax import average, errors, evaluate, train
from tx_jax.data import text_files
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.training import checkpoint, experiment, init_from, run_vocab


def test_a_run_keeps_its_vocabulary_and_whatever_reads_the_run_reads_that_copy(small_corpus_dir, vocab_dir, tmp_path):
  workdir, own, cache = str(tmp_path / "run"), str(tmp_path / "own_500.model"), str(tmp_path / "cache")
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=3, vocab_path=own)
  train.train_and_evaluate(config, workdir)  # trains own_500.model first
  kept = os.path.join(workdir, run_vocab.SENTENCEPIECE_NAME)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["vocab_path"] == "vocab.model"  # relative: the workdir may move
  assert run_vocab.same(kept, own)
  os.remove(own)  # the vocabulary the run named is gone (another machine, a cleaned cache)

  # Evaluation, with the run's --config naming the lost file, reads the copy.
  assert experiment.evaluation_config(workdir, config).vocab_path == kept
  scores = evaluate.evaluate(experiment.evaluation_config(workdir, config), workdir, split="test", max_sentences=4)
  assert scores["step"] == 3 and scores["metrics"]["test/bleu"] >= 0

  # Resumed from a config that names no vocabulary, in another data cache, it neither trains nor computes one.
  train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=6, vocab_path="",
                                            data_cache_dir=cache), workdir)
  assert checkpoint.make_manager(workdir, read_only=True).all_steps() == [3, 6]
  assert not os.path.exists(os.path.join(cache, "vocab"))

  # Resumed without its copy (config.json and checkpoints/ copied alone): one error naming it.
  os.rename(kept, kept + ".aside")
  with pytest.raises(errors.DataError, match=r"vocab.model is missing: .*config.json names it as the run's vocabulary"):
    train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=9, vocab_path=""), workdir)
  os.rename(kept + ".aside", kept)

  # Resumed with another vocabulary: one error before anything is built.
  other = str(tmp_path / "other_400.model")
  train_texts = [en for _, en in text_files.load_text_files(small_corpus_dir, "de", "en", ["train"])["train"]]
  tokenizer_lib.train_or_load(other, train_texts, 400)
  with pytest.raises(errors.ConfigError, match=r"config.vocab_path=.*other_400.model.* is not the vocabulary that "
                                               r"the run in .* trained with \(.*vocab.model\)"):
    train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=9, vocab_path=other),
                             workdir)

  # A run initialised from it takes it when it starts; resumed, it keeps its own record, not the source's.
  tuned = make_tiny_config(small_corpus_dir, vocab_dir, vocab_path="", init_from=workdir)
  assert init_from.with_source(tuned).vocab_path == kept
  assert init_from.with_source(tuned, run_workdir=str(tmp_path / "tuned")).vocab_path == ""

  # An average of it is a workdir with the same vocabulary.
  out = average.average_workdir(workdir, 2, str(tmp_path / "avg"))["out"]
  assert experiment.workdir_config(out).vocab_path == os.path.join(out, "vocab.model")
  assert run_vocab.same(os.path.join(out, "vocab.model"), kept)


def test_a_workdir_from_before_runs_kept_their_vocabulary_computes_it_as_it_did(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"vocab_path": ""}))
  config = make_tiny_config("corpus", "vocab", vocab_path="")
  assert run_vocab.with_recorded(config, str(tmp_path)) is config
  config.vocab_path = str(tmp_path / "mine.model")  # and one it named is read as named
  assert run_vocab.with_recorded(config, str(tmp_path)) is config
