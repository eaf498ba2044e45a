"""A run trained on tx_jax's SentencePiece vocabulary exports a Hugging Face tokenizer with the ids the model read."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("tokenizers")

from tokenizers import Tokenizer  # noqa: E402

from conftest import make_tiny_config  # noqa: E402
from tx_jax import tasks  # noqa: E402
from tx_jax.data import tokenizer as tokenizer_lib  # noqa: E402
from tx_jax.interop import hf_tokenizer  # noqa: E402

# Texts SentencePiece normalises: spaces at the ends and in runs, a tab, a no-break space, compatibility
# characters (NFKC), characters the vocabulary has never seen, and nothing at all.
EDGES = ["", " ", "  Öffnen   Sie  ", "\tTabelle\tund Zelle", "x\u00a0y", "ﬁ Ⅻ ①", "日本語 😀 text", "a  b"]


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
  assert hf_tokenizer.write(str(vocab), str(out), task, max_length=128) == ["tokenizer.json", "tokenizer_config.json"]
  fast = Tokenizer.from_file(str(out / "tokenizer.json"))
  unknown = 0
  for text in _real_lines(libreoffice_pairs):
    ids = sp.encode(text)
    assert fast.encode(text).ids == task.input_tokens(ids, sp), text
    assert fast.encode(text, add_special_tokens=False).ids == ids, text
    if sp.unk_id() in ids:  # SentencePiece writes " ⁇ " for it, a Hugging Face tokenizer <unk>
      unknown += 1
      continue
    assert fast.decode(fast.encode(text).ids, skip_special_tokens=True) == sp.detokenize(ids), text
  assert 0 < unknown < 20  # the unseen characters among EDGES (and a few in the corpus) were tried
  settings = json.loads((out / "tokenizer_config.json").read_text())
  assert {k: settings[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")} == {
    "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
  assert settings.get("mask_token") == ("[MASK]" if with_mask else None)
  if with_mask:  # a fill-mask text's [MASK] is the one token the model was trained to fill
    assert tokenizer_lib.MASK_ID in fast.encode("ein [MASK] Text", add_special_tokens=False).ids


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
  sources = [de for de, _ in _validation_pairs(small_corpus_dir)[:6]]
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


def _validation_pairs(corpus_dir):
  """(German, English) lines of the text_files corpus's validation split."""
  with open(os.path.join(corpus_dir, "validation.de")) as de, open(os.path.join(corpus_dir, "validation.en")) as en:
    return [(a.rstrip("\n"), b.rstrip("\n")) for a, b in zip(de, en)]
