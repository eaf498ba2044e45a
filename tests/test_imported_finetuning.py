"""Fine-tuning an imported model: train with config.init_from naming an imported workdir takes its model.

A tiny random BertForSequenceClassification with a WordPiece tokenizer.json trained here on the Rotten
Tomatoes snippets is saved with save_pretrained, imported with import_hf.import_dir and fine-tuned on
the real classification task by configs/bert_cls_default.py, whose own model fields differ from it.
"""

import logging
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from configs import bert_cls_default  # noqa: E402
from tx_jax import export_hf, import_hf, parallel, train  # noqa: E402
from tx_jax.data import rotten_tomatoes  # noqa: E402
from tx_jax.training import experiment, run_vocab  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # as BERT's vocabularies: [PAD] = 0


def _wordpiece(texts, vocab_size: int):
  """A BERT-style (lower-cased WordPiece) tokenizer trained on `texts`."""
  tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  tok.decoder = tokenizers.decoders.WordPiece()
  tok.train_from_iterator(texts, tokenizers.trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
  return tok


def _train_losses(workdir: str) -> list:
  """The train/loss scalars TensorBoard got, in step order."""
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  acc.Reload()
  return [e.value for e in sorted(acc.Scalars("train/loss"), key=lambda e: e.step)]


def test_fine_tuning_an_imported_bert_classifier_takes_its_model_and_trains(data_cache_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO)
  splits = rotten_tomatoes.load_rotten_tomatoes(data_cache_dir)
  tok = _wordpiece([text for text, _ in splits["train"]], vocab_size=800)
  torch.manual_seed(0)
  model = transformers.BertForSequenceClassification(transformers.BertConfig(
    num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=tok.get_vocab_size(),
    max_position_embeddings=64, num_labels=2, pad_token_id=tok.token_to_id("[PAD]"), hidden_dropout_prob=0.3))
  with torch.no_grad():  # a head sure of "rotten" (label 0, the minority): a loss far above a uniform guess's
    model.classifier.bias.copy_(torch.tensor([1.5, -1.5]))
  hf_dir, imported, tuned = str(tmp_path / "hf"), str(tmp_path / "imported"), str(tmp_path / "tuned")
  model.save_pretrained(hf_dir)
  tok.save(os.path.join(hf_dir, "tokenizer.json"))
  import_hf.import_dir(hf_dir, imported)

  config = bert_cls_default.get_config()  # its own encoder: 4 pre-norm layers of width 256, 4 heads, GELU (tanh)
  config.update(init_from=imported, data_cache_dir=data_cache_dir, num_train_steps=60, log_every_steps=10,
                eval_every_steps=60, checkpoint_every_steps=60, num_eval_steps=2, learning_rate=0.005,
                warmup_steps=5, data_workers=0)
  train.train_and_evaluate(config, tuned)

  run = experiment.workdir_config(tuned)  # the config the fine-tuning run recorded
  source = experiment.workdir_config(imported)
  for field in ("vocab_size", "emb_dim", "num_heads", "mlp_dim", "num_encoder_layers", "max_len", "norm_position",
                "activation", "num_token_types", "norm_epsilon", "embedding_norm", "final_norm", "pooler"):
    assert run[field] == source[field], field
  assert (run.emb_dim, run.norm_position, run.activation) != (config.emb_dim, config.norm_position, config.activation)
  for field in ("learning_rate", "dropout_rate", "num_train_steps", "task", "dataset", "per_device_batch_size"):
    assert run[field] == config[field], field  # the training fields stay the config's
  assert run.dropout_rate != source.dropout_rate
  assert run.vocab_path == os.path.join(tuned, "tokenizer")  # the model's own tokenizer came along, kept in the run
  assert run_vocab.same(run.vocab_path, source.vocab_path)

  losses = _train_losses(tuned)
  assert len(losses) == 6 and np.isfinite(losses).all()
  assert losses[0] > np.log(2), losses  # the imported head, not a fresh one, made the first steps' predictions
  assert max(losses[3:]) < losses[0], losses  # the loss falls: the second half's windows all below the first
  taken = [r.getMessage() for r in caplog.records if "replaces these config fields" in r.getMessage()]
  assert len(taken) == 1 and "emb_dim=32 (was 256)" in taken[0] and "dropout_rate" not in taken[0]

  # The fine-tuned run exports as a Hugging Face classifier with the tokenizer it kept; transformers scores as tx_jax.
  out = str(tmp_path / "exported")
  shutil.rmtree(imported)  # what is exported comes from the run's own workdir, its kept tokenizer included
  assert export_hf.export_workdir(tuned, out) == "BertForSequenceClassification"
  text = splits["validation"][0][0]
  exported_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(out, "tokenizer.json"))
  assert exported_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text).ids
  ids = np.asarray([[tok.token_to_id("[CLS]")] + tok.encode(text).ids[:30] + [tok.token_to_id("[SEP]")]])
  graphdef, params, _ = experiment.restore_model(tuned, run, parallel.make_mesh((-1, 1, 1)))
  ours = np.asarray(nnx.merge(graphdef, params).classify(jax.numpy.asarray(ids)))
  exported = transformers.BertForSequenceClassification.from_pretrained(out).eval()
  with torch.no_grad():
    theirs = exported(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
  original = transformers.BertForSequenceClassification.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    assert not np.allclose(original(torch.tensor(ids)).logits.numpy(), theirs, atol=1e-3)  # the fine-tuned weights


def test_a_config_the_source_model_cannot_run_is_one_error_naming_init_from(tmp_path):
  """The model fields taken from init_from are validated with the run's own: max_len 32 cannot hold 64 tokens."""
  from tx_jax import errors
  from tx_jax.training import init_from
  model = transformers.BertForSequenceClassification(transformers.BertConfig(
    num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=50,
    max_position_embeddings=32, num_labels=2))
  model.save_pretrained(str(tmp_path / "hf"))
  import_hf.import_dir(str(tmp_path / "hf"), str(tmp_path / "imported"))
  config = bert_cls_default.get_config()  # max_target_length 64
  config.init_from = str(tmp_path / "imported")
  with pytest.raises(errors.ConfigError, match=r"config.max_len=32 .*max_target_length=64.*config.init_from="):
    init_from.with_source(config)


def _imported_bert(architecture, tmp_path, **fields) -> str:
  """The workdir of a tiny random BERT of `architecture` (a transformers class), saved and imported here."""
  torch.manual_seed(0)
  model = architecture(transformers.BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                                               intermediate_size=32, vocab_size=50, max_position_embeddings=64,
                                               **fields))
  hf_dir, workdir = tmp_path / f"hf_{architecture.__name__}", str(tmp_path / architecture.__name__)
  model.save_pretrained(str(hf_dir))
  import_hf.import_dir(str(hf_dir), workdir)
  return workdir


def test_the_run_keeps_its_own_head_where_the_source_has_another(tmp_path):
  """A classifier from an imported masked LM gets no MLM output bias (so it exports); one over 2 classes from a
  3-class classifier keeps the source's encoder and pooler and starts its own classification head."""
  from tx_jax import parallel
  from tx_jax.interop import hf_config
  from tx_jax.interop import workdir as workdir_lib
  from tx_jax.training import init_from
  config = bert_cls_default.get_config()  # 2 classes
  config.init_from = _imported_bert(transformers.BertForMaskedLM, tmp_path)
  run = init_from.with_source(config)
  source = experiment.workdir_config(config.init_from)
  assert source.output_bias and source.mlm_head and not source.pooler  # the MLM head's switches
  assert (run.emb_dim, run.output_bias, run.mlm_head, run.pooler) == (16, False, False, True)
  assert hf_config.to_hf(run)["architectures"] == [hf_config.CLASSIFIER]  # export_hf can write the fine-tuned run

  config.init_from = _imported_bert(transformers.BertForSequenceClassification, tmp_path, num_labels=3)
  run = init_from.with_source(config)
  assert (run.num_classes, run.pooler, run.emb_dim) == (2, True, 16)
  _, state, _, _ = experiment.build(run, parallel.make_mesh(run.mesh_shape))
  params = init_from.load_matching_params(config.init_from, state.params)
  source_params = workdir_lib.read_workdir(config.init_from)[1]
  for name in ("pooler", "embedder"):  # taken, leaf by leaf
    ours = [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(params[name]))]
    theirs = [np.asarray(x) for x in jax.tree.leaves(source_params[name])]
    assert len(ours) == len(theirs) > 0 and all(np.array_equal(a, b) for a, b in zip(ours, theirs)), name
  assert jax.tree.leaves(source_params["classifier"]["kernel"])[0].shape == (16, 3)
  np.testing.assert_array_equal(params["classifier"]["kernel"][...], state.params["classifier"]["kernel"][...])


def test_a_vocabulary_other_than_the_source_models_is_one_error(tmp_path):
  """A run naming its own vocab_path of another size would feed the imported embeddings ids of other tokens."""
  from tx_jax import errors
  from tx_jax.training import init_from
  hf_dir, imported = tmp_path / "hf", str(tmp_path / "imported")
  torch.manual_seed(0)
  transformers.BertForSequenceClassification(transformers.BertConfig(
    num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=50,
    max_position_embeddings=64, num_labels=2)).save_pretrained(str(hf_dir))
  _wordpiece(["the film is a delight", "a dull film"], vocab_size=50).save(str(hf_dir / "tokenizer.json"))
  import_hf.import_dir(str(hf_dir), imported)
  config = bert_cls_default.get_config()  # vocab_size 4000
  config.update(init_from=imported, vocab_path=str(tmp_path / "own_4000.model"))
  with pytest.raises(errors.ConfigError, match=r"config.vocab_path=.*own_4000.model.*is not the vocabulary of "
                                               r"config.init_from=.*vocab_size=50"):
    init_from.with_source(config)
  config.vocab_path = os.path.join(imported, "tokenizer")  # the imported model's own tokenizer, named explicitly
  assert init_from.with_source(config).vocab_size == experiment.workdir_config(imported).vocab_size
  config.vocab_path = ""  # the default: the imported tokenizer comes along
  assert init_from.with_source(config).vocab_path == experiment.workdir_config(imported).vocab_path
