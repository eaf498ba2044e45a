"""A run keeps its vocabulary in its workdir: the tools, its resumption, init_from and an average read that copy."""

import json
import os

import pytest
from conftest import make_tiny_config

from tx_jax import average, errors, evaluate, train
from tx_jax.data import text_files
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.training import checkpoint, experiment, init_from, run_vocab


def test_a_run_keeps_its_vocabulary_and_whatever_reads_the_run_reads_that_copy(small_corpus_dir, vocab_dir, tmp_path,
                                                                               caplog):
  workdir, own, cache = str(tmp_path / "run"), str(tmp_path / "own_500.model"), str(tmp_path / "cache")
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=3, vocab_path=own)
  train.train_and_evaluate(config, workdir)  # trains own_500.model first
  kept = os.path.join(workdir, run_vocab.SENTENCEPIECE_NAME)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["vocab_path"] == "vocab.model"  # relative: the workdir may move
  assert run_vocab.same(kept, own)
  experiment.evaluation_config(workdir, config)  # the --config names the same vocabulary elsewhere: nothing to say
  assert "vocab_path" not in caplog.text and "Evaluating with the run's own" not in caplog.text  # nor of () and []
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
  assert init_from.with_source(tuned, run_workdir=str(tmp_path / "checkpoints_alone")).vocab_path == kept
  (tmp_path / "tuned").mkdir()  # a run started from it before runs kept their vocabulary computed its own
  (tmp_path / "tuned" / "config.json").write_text(json.dumps({"vocab_path": ""}))
  assert init_from.with_source(tuned, run_workdir=str(tmp_path / "tuned")).vocab_path == ""

  # An average of it is a workdir with the same vocabulary.
  out = average.average_workdir(workdir, 2, str(tmp_path / "avg"))["out"]
  assert experiment.workdir_config(out).vocab_path == os.path.join(out, "vocab.model")
  assert run_vocab.same(os.path.join(out, "vocab.model"), kept)

  # A run from before runs kept their vocabulary (config.json without the record), resumed with the one it
  # computes gone (a cleaned cache, or a cache key since changed): one error, never a vocabulary trained anew.
  with open(os.path.join(workdir, "config.json")) as f:
    before_the_record = dict(json.load(f), vocab_path="")
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(before_the_record, f)
  resumed = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=9, vocab_path=own)
  with pytest.raises(errors.DataError, match=r"own_500.model is missing, and the run in .* trained with one"):
    train.train_and_evaluate(resumed, workdir)
  os.remove(os.path.join(workdir, "config.json"))  # the same with checkpoints copied without their config.json
  with pytest.raises(errors.DataError, match=r"own_500.model is missing, .* or a workdir copied without its config"):
    train.train_and_evaluate(resumed, workdir)
  assert not os.path.exists(own) and checkpoint.make_manager(workdir, read_only=True).all_steps() == [3, 6]


def test_a_workdir_from_before_runs_kept_their_vocabulary_computes_it_as_it_did(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"vocab_path": ""}))
  config = make_tiny_config("corpus", "vocab", vocab_path="")
  assert run_vocab.with_recorded(config, str(tmp_path)) is config
  config.vocab_path = str(tmp_path / "mine.model")  # and one it named is read as named
  assert run_vocab.with_recorded(config, str(tmp_path)) is config


def test_a_resumed_run_takes_its_recorded_special_ids_with_its_vocabulary(tmp_path):
  """An imported tokenizer's ids (Marian's pad = its start token, eos 0) come back with it, not tx_jax's defaults."""
  (tmp_path / "tokenizer").mkdir()
  (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")
  (tmp_path / "config.json").write_text(json.dumps({"vocab_path": "tokenizer", "bos_id": 58100, "eos_id": 0,
                                                    "pad_id": 58100}))
  resumed = run_vocab.with_recorded(make_tiny_config("corpus", "vocab", vocab_path=""), str(tmp_path))
  assert (resumed.vocab_path, resumed.bos_id, resumed.eos_id, resumed.pad_id) == (
    str(tmp_path / "tokenizer"), 58100, 0, 58100)


def test_a_resumed_run_given_another_special_id_than_it_recorded_is_one_error(tmp_path):
  """An explicit --config.pad_id away from the record is named; the default cannot be told from none and gives way."""
  (tmp_path / "vocab.model").write_bytes(b"pieces")
  (tmp_path / "config.json").write_text(json.dumps({"vocab_path": "vocab.model", "pad_id": 3}))
  with pytest.raises(errors.ConfigError, match="config.pad_id=5 is not the id of the vocabulary the run in .* "
                     "trained with \\(3\\); leave pad_id at its default to resume it"):
    run_vocab.with_recorded(make_tiny_config("corpus", "vocab", vocab_path="", pad_id=5), str(tmp_path))
  for given in (0, 3):  # tx_jax's default, or the recorded id itself
    resumed = run_vocab.with_recorded(make_tiny_config("corpus", "vocab", vocab_path="", pad_id=given), str(tmp_path))
    assert resumed.pad_id == 3


def test_a_run_started_from_a_source_with_another_special_id_than_it_sets_is_one_error(tmp_path):
  """As on resuming: the source's ids come with its vocabulary, so an explicit other pad_id is named, not dropped."""
  source = tmp_path / "source"
  source.mkdir()
  (source / "vocab.model").write_bytes(b"pieces")
  fields = dict(json.loads(make_tiny_config("corpus", "vocab").to_json_best_effort()), vocab_path="vocab.model",
                pad_id=3)
  (source / "config.json").write_text(json.dumps(fields))
  with pytest.raises(errors.ConfigError, match="config.pad_id=5 is not the id of config.init_from=.*source's "
                     "vocabulary \\(3\\)"):
    init_from.with_source_vocabulary(make_tiny_config("corpus", "vocab", vocab_path="", init_from=str(source),
                                                      pad_id=5))
  adopted = init_from.with_source_vocabulary(make_tiny_config("corpus", "vocab", vocab_path="", init_from=str(source)))
  assert (adopted.vocab_path, adopted.pad_id) == (str(source / "vocab.model"), 3)


def test_an_import_given_another_special_id_than_the_model_has_is_one_error():
  """import_hf --config with pad_id=5 for a GPT-2 that pads with its EOS 50 is named, not overwritten in silence."""
  from tx_jax import import_hf
  hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 64, "n_positions": 64,
        "n_embd": 32, "n_head": 4, "n_layer": 2, "bos_token_id": 50, "eos_token_id": 50}
  with pytest.raises(errors.ConfigError, match="config.pad_id=5 is not the id of the imported model's tokenizer "
                     "\\(50\\)"):
    import_hf.workdir_config(hf, make_tiny_config("corpus", "vocab", pad_id=5))
  assert import_hf.workdir_config(hf, make_tiny_config("corpus", "vocab"))["pad_id"] == 50  # the default gives way


def test_a_run_resumed_after_init_from_a_source_without_a_record_keeps_its_own(tmp_path):
  """The source (from before runs kept theirs) changed vocab_size; the run computed and kept its own vocabulary."""
  source, run = tmp_path / "source", tmp_path / "run"
  config = make_tiny_config("corpus", "vocab", vocab_path="")
  for workdir, fields in ((source, {"vocab_size": 400}),
                          (run, {"vocab_size": 400, "vocab_path": "vocab.model", "init_from": str(source)})):
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(dict(json.loads(config.to_json_best_effort()), **fields)))
  (run / "vocab.model").write_bytes(b"the run's own pieces")
  resumed = run_vocab.with_recorded(make_tiny_config("corpus", "vocab", vocab_path="", init_from=str(source)),
                                    str(run))
  assert resumed.vocab_path == str(run / "vocab.model")
  assert init_from.with_source(resumed, run_workdir=str(run)).vocab_size == 400  # no "is not the vocabulary" error


def test_a_vocabulary_inside_the_workdir_under_another_name_is_kept_under_the_standard_one(tmp_path):
  (tmp_path / "spm.model").write_bytes(b"pieces")
  assert run_vocab.keep(str(tmp_path / "spm.model"), str(tmp_path)) == "vocab.model"
  assert run_vocab.same(str(tmp_path / "vocab.model"), str(tmp_path / "spm.model"))
  assert run_vocab.keep(str(tmp_path / "vocab.model"), str(tmp_path)) == "vocab.model"  # already there: as it is


def test_a_resumed_run_whose_named_vocabulary_is_gone_reads_its_own_copy(tmp_path, caplog):
  (tmp_path / "vocab.model").write_bytes(b"pieces")
  (tmp_path / "config.json").write_text(json.dumps({"vocab_path": "vocab.model"}))
  gone = str(tmp_path / "cleaned_cache" / "spm_500.model")  # the original command's, its cache since cleaned
  resumed = run_vocab.with_recorded(make_tiny_config("corpus", "vocab", vocab_path=gone), str(tmp_path))
  assert resumed.vocab_path == str(tmp_path / "vocab.model")
  assert "is gone; the run resumes with its own copy" in caplog.text


def test_an_old_run_resumed_with_a_vocabulary_of_another_size_than_its_source_is_still_one_error(tmp_path):
  """Without a record of its own, the vocab_path it names is checked against the source's embeddings, as before."""
  from tx_jax import errors
  source, run = tmp_path / "source", tmp_path / "run"
  config = make_tiny_config("corpus", "vocab", vocab_path="")
  for workdir, fields in ((source, {"vocab_size": 400}), (run, {"vocab_size": 400, "init_from": str(source)})):
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps(dict(json.loads(config.to_json_best_effort()), **fields)))
  (tmp_path / "other_500.model").write_bytes(b"500 other pieces")
  resumed = run_vocab.with_recorded(make_tiny_config("corpus", "vocab", vocab_path=str(tmp_path / "other_500.model"),
                                                     init_from=str(source)), str(run))
  with pytest.raises(errors.ConfigError, match="other_500.model.*is not the vocabulary of config.init_from"):
    init_from.with_source(resumed, run_workdir=str(run))
