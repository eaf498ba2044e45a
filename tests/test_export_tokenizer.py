"""A run trained on tx_jax's SentencePiece vocabulary exports a Hugging Face tokenizer with the ids the model read."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from tokenizers import Tokenizer  # noqa: E402

from conftest import make_tiny_config  # noqa: E402
from tx_jax import tasks  # noqa: E402
from tx_jax.data import text_files  # noqa: E402
from tx_jax.data import tokenizer as tokenizer_lib  # noqa: E402
from tx_jax.interop import hf_tokenizer  # noqa: E402

# Texts SentencePiece normalises: spaces at the ends and in runs, a tab, a no-break space, compatibility
# characters (NFKC, fullwidth forms of the special pieces among them), characters the vocabulary has never
# seen, a next-line character at the ends (not a space to strip), and nothing at all.
EDGES = ["", " ", "  Öffnen   Sie  ", "\tTabelle\tund Zelle", "x\u00a0y", "ﬁ Ⅻ ①", "日本語 😀 text", "a  b",
         "＜s＞ ＜/s＞ ＜unk＞ ＜pad＞", "x\x85", "\x85y"]
# What each task's model reads around a text's ids (tx_jax.tasks: features and the tools)
AROUND = {"translation": ([], [tokenizer_lib.EOS_ID]), "lm": ([tokenizer_lib.BOS_ID], []),
          "mlm": ([], [tokenizer_lib.EOS_ID]), "classification": ([tokenizer_lib.BOS_ID], [tokenizer_lib.EOS_ID])}


def _real_lines(libreoffice_pairs, n=400):
  """Real German and English sentences of the test split (the vocabulary saw none of them)."""
  return [text for pair in libreoffice_pairs["test"][:n // 2] for text in pair] + EDGES


@pytest.mark.parametrize("task_name,with_mask", [("translation", False), ("lm", False), ("mlm", True),
                                                 ("classification", True)])
def test_exported_tokenizer_encodes_and_decodes_as_sentencepiece(task_name, with_mask, libreoffice_pairs,
                                                                 tmp_path_factory):
  """tokenizer.json gives SentencePiece's ids with the specials the task's model reads; it decodes them back."""
  vocab = tmp_path_factory.getbasetemp() / f"export_{with_mask}.model"
  texts = [text for pair in libreoffice_pairs["train"][:3000] for text in pair]
  tokenizer_lib.train_or_load(str(vocab), texts, 600, with_mask=with_mask)
  sp = tokenizer_lib.Tokenizer(str(vocab))
  task = tasks.get(task_name)
  out = tmp_path_factory.mktemp(task_name)
  built = hf_tokenizer.for_task(str(vocab), task, max_length=128)
  assert hf_tokenizer.save(*built, str(out)) == ["tokenizer.json", "tokenizer_config.json"]
  fast = Tokenizer.from_file(str(out / "tokenizer.json"))
  before, after = AROUND[task_name]
  unknown = 0
  for text in _real_lines(libreoffice_pairs):
    ids = sp.encode(text)
    assert fast.encode(text).ids == before + ids + after, text
    assert fast.encode(text, add_special_tokens=False).ids == ids, text
    if sp.unk_id() in ids:  # SentencePiece writes " ⁇ " for it, a Hugging Face tokenizer <unk>
      unknown += 1
      continue
    assert fast.decode(fast.encode(text).ids, skip_special_tokens=True) == sp.detokenize(ids), text
    spaces = [sp.piece_to_id("▁")] * 2  # lone word starts, as a model may generate them first or last
    assert fast.decode(spaces + ids + spaces) == sp.detokenize(spaces + ids + spaces), text
  assert sp.piece_to_id("▁") != sp.unk_id()  # the lone word start was tried
  assert 0 < unknown < 20  # the unseen characters among EDGES (and a few in the corpus) were tried
  settings = json.loads((out / "tokenizer_config.json").read_text())
  assert {k: settings[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")} == {
    "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
  assert settings.get("mask_token") == ("[MASK]" if with_mask else None)
  if with_mask:  # a fill-mask text's [MASK] is the one token the model was trained to fill
    assert tokenizer_lib.MASK_ID in fast.encode("ein [MASK] Text", add_special_tokens=False).ids


def test_a_byte_fallback_vocabulary_decodes_its_bytes_back(libreoffice_pairs, tmp_path):
  """A SentencePiece model a run names that spells unseen characters in bytes: the same ids, the same text back."""
  import sentencepiece as spm
  texts = [en for en, _ in libreoffice_pairs["train"][:2000]]
  spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(tmp_path / "bytes"), vocab_size=600,
                                 byte_fallback=True, pad_id=tokenizer_lib.PAD_ID, eos_id=tokenizer_lib.EOS_ID,
                                 unk_id=tokenizer_lib.UNK_ID, bos_id=tokenizer_lib.BOS_ID, minloglevel=2)
  sp = tokenizer_lib.Tokenizer(str(tmp_path / "bytes.model"))
  fast, _ = hf_tokenizer.for_task(sp.path, tasks.get("mlm"), max_length=64)
  for text in ["Öffnen Sie 日本語 😀", " x\u00a0y ", "Click OK.", "x <0x41> y"]:  # a byte piece's spelling
    ids = sp.encode(text)
    assert fast.encode(text, add_special_tokens=False).ids == ids, text
    assert fast.decode(ids) == sp.detokenize(ids), text
  assert any(sp.id_to_piece(i).startswith("<0x") for i in sp.encode("日本語"))  # bytes were spelled


def test_the_special_ids_exported_are_the_tokenizer_s_and_come_back_on_import(small_corpus_dir, vocab_dir):
  """GPT-2 and Llama configs of runs on tx_jax's vocabulary name its ids; a re-import keeps padding at 0."""
  from tx_jax.interop import hf_config
  gpt2 = dict(task="lm", source_language="", num_encoder_layers=0, positions="learned", activation="gelu",
              scale_embeddings=False)
  runs = {"GPT2LMHeadModel": gpt2, "LlamaForCausalLM": dict(gpt2, positions="rope", norm="rmsnorm",
                                                            activation="swiglu", use_bias=False)}
  for architecture, fields in runs.items():
    config = json.loads(make_tiny_config(small_corpus_dir, vocab_dir, **fields).to_json_best_effort())
    hf = hf_config.to_hf({**hf_tokenizer.OWN_VOCABULARY_IDS, **config})
    assert hf["architectures"] == [architecture]
    assert (hf["bos_token_id"], hf["eos_token_id"], hf["pad_token_id"]) == (3, 1, 0), architecture
    back = hf_config.from_hf(hf)
    assert (back["bos_id"], back["eos_id"], back["pad_id"]) == (3, 1, 0), architecture


def test_exported_translator_tokenizes_and_translates_in_transformers(small_corpus_dir, vocab_dir, tmp_path):
  """A translator trained here, exported, translates in transformers as in tx_jax: same ids, tokens and text."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from tx_jax import export_hf, train
  from tx_jax.inference import decode, restore
  from tx_jax.interop import hf_config
  marian = {k: v for k, v in hf_config.FIXED["marian"].items() if k not in ("model_family", "has_final_norm")}
  config = make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=300, eval_every_steps=300,  # past repeating
                            checkpoint_every_steps=300, num_predict_sentences=0, learning_rate=0.01,  # one token
                            activation="relu", norm_epsilon=1e-5, **marian)
  run, out = str(tmp_path / "run"), str(tmp_path / "hf")
  train.train_and_evaluate(config, run)
  assert export_hf.export_workdir(run, out) == "MarianMTModel"
  assert sorted(f for f in os.listdir(out) if f.startswith("tokenizer")) == ["tokenizer.json", "tokenizer_config.json"]
  hf = json.loads(open(os.path.join(out, "config.json")).read())
  assert (hf["pad_token_id"], hf["eos_token_id"], hf["decoder_start_token_id"]) == (
    tokenizer_lib.PAD_ID, tokenizer_lib.EOS_ID, tokenizer_lib.BOS_ID)

  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  model = transformers.MarianMTModel.from_pretrained(out).eval()
  cfg, graphdef, params, sp = restore.restore_for_inference(run)
  sources = [de for de, _ in text_files.load_text_files(small_corpus_dir, "de", "en", ["validation"])["validation"][:6]]
  seen = set()
  for source in sources:
    ids = tokenizer(source)["input_ids"]
    assert ids == sp.encode(source) + [sp.eos_id], source
    steps = decode.decode_length(len(ids), cfg.max_predict_length)
    ours = decode.translate_batch(graphdef, params, np.asarray([ids], np.int32), beam_size=1, max_len=steps,
                                  alpha=cfg.length_penalty_alpha, bos_id=sp.bos_id, eos_id=sp.eos_id)
    with torch.no_grad():  # its generation ids are the exported config's; one step more for its forced EOS
      theirs = model.generate(**tokenizer([source], return_tensors="pt"), max_new_tokens=steps + 1, num_beams=1,
                              do_sample=False)
    theirs = theirs.numpy()[0, 1:steps + 1].tolist()  # without the start token
    ours = np.asarray(ours)[0].tolist()
    n = theirs.index(sp.eos_id) + 1 if sp.eos_id in theirs else len(theirs)
    assert ours[:n] == theirs[:n], source
    seen |= set(theirs[:n])
    if sp.unk_id() not in theirs[:n]:
      assert tokenizer.decode(theirs[:n], skip_special_tokens=True) == sp.detokenize(ours), source
  assert len(seen) >= 5  # the translations compared are not one token repeated


def test_every_kind_of_workdir_exports_with_the_tokenizer_it_has(small_corpus_dir, vocab_dir, tmp_path, caplog):
  """A run with its SentencePiece copy, an imported model's kept files of any kind, and a run from before the
  record whose corpus is gone (weights exported, tokenizer left out with a warning)."""
  import shutil
  from tx_jax import export_hf, train
  from tx_jax.interop import hf_config
  marian = {k: v for k, v in hf_config.FIXED["marian"].items() if k not in ("model_family", "has_final_norm")}
  run = str(tmp_path / "run")
  train.train_and_evaluate(make_tiny_config(small_corpus_dir, vocab_dir, num_train_steps=2, eval_every_steps=2,
                                            num_predict_sentences=0, activation="relu", norm_epsilon=1e-5, **marian),
                           run)

  def variant(name, **fields):
    path = str(tmp_path / name)
    shutil.copytree(run, path)
    with open(os.path.join(path, "config.json")) as f:
      config = json.load(f)
    with open(os.path.join(path, "config.json"), "w") as f:
      json.dump(dict(config, **fields), f)
    os.remove(os.path.join(path, "vocab.model"))
    return path

  def exported(workdir):
    out = str(tmp_path / ("hf_" + os.path.basename(workdir)))
    assert export_hf.export_workdir(workdir, out) == "MarianMTModel"
    return sorted(f for f in os.listdir(out) if f not in ("config.json", "model.safetensors"))

  assert exported(run) == ["tokenizer.json", "tokenizer_config.json"]
  imported = variant("imported", vocab_path="", hf_architecture="MarianMTModel")
  os.makedirs(os.path.join(imported, "tokenizer"))
  open(os.path.join(imported, "tokenizer", "vocab.txt"), "w").write("[PAD]\n[UNK]\n")  # a slow tokenizer's file only
  assert exported(imported) == ["vocab.txt"]
  old = variant("old", vocab_path="", data_dir=str(tmp_path / "moved_corpus"))
  assert exported(old) == [] and "without a tokenizer: its vocabulary cannot be found" in caplog.text
