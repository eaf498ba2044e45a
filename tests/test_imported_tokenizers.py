"""Imported models keep their own tokenizers: tx_jax's encoding, generation, translation and attention labels
agree with transformers' tokenizer and model on tiny models with tokenizers trained here on the offline corpus."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
import sentencepiece as spm  # noqa: E402

from tx_jax import defaults, generate, import_hf, translate  # noqa: E402
from tx_jax.data import hf_tokenizers, pipeline  # noqa: E402
from tx_jax.inference import attention_maps, decode, restore  # noqa: E402
from tx_jax.training import experiment  # noqa: E402

from conftest import first_train_batch  # noqa: E402


def _perturbed(model):
  """A tiny random model with every trainable weight moved off its initial value."""
  with torch.no_grad():
    for p in model.parameters():
      if p.requires_grad:
        p.add_(0.05 * torch.randn_like(p))
  return model.eval()


def test_gpt2_generates_and_labels_attention_with_its_tokenizer_json(libreoffice_pairs, tmp_path):
  """An imported GPT-2 with a byte-level BPE tokenizer.json: tx_jax.generate's text equals transformers'."""
  texts = [p[0] for p in libreoffice_pairs["train"][:3000]]  # English
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
  bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = tokenizers.decoders.ByteLevel()
  bpe.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
    vocab_size=400, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
  bpe.add_special_tokens(["<|endoftext|>"])  # the last id, as GPT-2's 50256: id 0 is a byte ("!" in GPT-2's)
  end = bpe.token_to_id("<|endoftext|>")
  assert end > 0
  torch.manual_seed(0)
  model = _perturbed(transformers.GPT2LMHeadModel(transformers.GPT2Config(
    n_layer=2, n_embd=32, n_head=4, vocab_size=bpe.get_vocab_size(), n_positions=64, bos_token_id=end,
    eos_token_id=end)))
  hf_dir, work = str(tmp_path / "hf"), str(tmp_path / "work")
  model.save_pretrained(hf_dir)
  bpe.save(os.path.join(hf_dir, "tokenizer.json"))
  import_hf.import_dir(hf_dir, work)
  with open(os.path.join(work, "config.json")) as f:
    assert json.load(f)["vocab_path"] == "tokenizer"
  theirs_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(hf_dir, "tokenizer.json"))
  ours_tok = restore.restore_for_inference(work)[3]
  assert isinstance(ours_tok, hf_tokenizers.HFTokenizer) and ours_tok.bos_id == ours_tok.eos_id == end
  # No pad_token_id: it pads with EOS, so id 0, a real token, is text when detokenized (it was dropped as padding).
  assert ours_tok.pad_id == end
  word = theirs_tok.encode("Click", add_special_tokens=False)
  assert ours_tok.detokenize([0, *word, 0, end, 0]) == theirs_tok.decode([0, *word, 0])
  for text in texts[3000 - 20:]:
    assert ours_tok.encode(text) == theirs_tok.encode(text, add_special_tokens=False)

  prompt = "Click the button"
  ours = generate.generate(work, prompt, temperature=0.0, max_new_tokens=12)[0]
  ids = [end] + theirs_tok.encode(prompt, add_special_tokens=False)
  with torch.no_grad():
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         do_sample=False, max_new_tokens=12, pad_token_id=end).numpy()[0, len(ids):].tolist()
  out = out[:out.index(end)] if end in out else out
  assert ours == theirs_tok.decode(out, skip_special_tokens=True)

  config, graphdef, params, tok = restore.restore_for_inference(work)
  maps = attention_maps.attention_weights(graphdef, params, config, tok, prompt)
  assert maps["self"].query_labels == [theirs_tok.convert_ids_to_tokens(i) for i in ids]


def _marian_vocabulary(pairs, tmp_path):
  """source.spm (de) and target.spm (en) trained on the corpus, and Marian's vocab.json over both."""
  out = {}
  for side, column in (("source", 0), ("target", 1)):
    prefix = str(tmp_path / side)
    spm.SentencePieceTrainer.train(sentence_iterator=iter([p[column] for p in pairs]), model_prefix=prefix,
                                   vocab_size=120, model_type="unigram", minloglevel=2)
    os.replace(prefix + ".model", str(tmp_path / f"{side}.spm"))
    out[side] = spm.SentencePieceProcessor(model_file=str(tmp_path / f"{side}.spm"))
  vocab = {"</s>": 0, "<unk>": 1}
  for processor in out.values():
    for i in range(processor.get_piece_size()):
      if not processor.is_control(i) and not processor.is_unknown(i):
        vocab.setdefault(processor.id_to_piece(i), len(vocab))
  vocab["<pad>"] = len(vocab)
  with open(tmp_path / "vocab.json", "w", encoding="utf-8") as f:
    json.dump(vocab, f, ensure_ascii=False)
  return vocab


def test_marian_translates_with_its_sentencepiece_models_and_vocab_json(libreoffice_pairs, small_corpus_dir, tmp_path):
  """Marian's ids are vocab.json's, EOS is 0 and padding is the last id: tx_jax.translate equals transformers."""
  pairs = [(de, en) for en, de in libreoffice_pairs["train"][:3000]]
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  vocab = _marian_vocabulary(pairs, hf_dir)
  pad = vocab["<pad>"]
  theirs_tok = transformers.MarianTokenizer(source_spm=str(hf_dir / "source.spm"),
                                            target_spm=str(hf_dir / "target.spm"), vocab=str(hf_dir / "vocab.json"))
  torch.manual_seed(0)
  model = _perturbed(transformers.MarianMTModel(transformers.MarianConfig(
    encoder_layers=2, decoder_layers=2, d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=48, decoder_ffn_dim=48, vocab_size=len(vocab), max_position_embeddings=256,
    activation_function="swish", scale_embedding=True, pad_token_id=pad, decoder_start_token_id=pad,
    eos_token_id=0, forced_eos_token_id=0)))
  for stack in (model.model.encoder, model.model.decoder):  # the frozen sinusoidal tables stay exact
    stack.embed_positions.weight.data.copy_(stack.embed_positions.create_weight())
  model.save_pretrained(str(hf_dir))
  work = str(tmp_path / "work")
  import_hf.import_dir(str(hf_dir), work)  # no --config: the decoding settings are tx_jax's defaults
  imported = experiment.workdir_config(work)
  assert set(imported) >= set(defaults.get_config()) and imported.beam_size == defaults.get_config().beam_size
  ours_tok = restore.restore_for_inference(work)[3]
  assert isinstance(ours_tok, hf_tokenizers.MarianTokenizer)
  assert (ours_tok.bos_id, ours_tok.eos_id, ours_tok.pad_id) == (pad, 0, pad)
  for source, target in pairs[-20:] + [(">>en<< " + pairs[0][0], pairs[0][1])]:
    assert ours_tok.encode(source) + [0] == theirs_tok(source).input_ids
    assert ours_tok.encode_target(target) + [0] == theirs_tok(text_target=target).input_ids

  short = [de for de, _ in pairs[-200:] if 3 <= len(de.split()) <= 8]
  lines = [short[0], short[1] + " " + short[2]]  # two lengths: the shorter is padded with Marian's <pad>, not 0
  ours = translate.translate_lines(work, lines, beam_size=1)
  encoded = theirs_tok(lines, padding=True, return_tensors="pt")
  max_len = decode.decode_length(int(encoded.attention_mask.sum(1).max()), experiment.workdir_config(work)
                                 .max_predict_length)
  with torch.no_grad():  # one step more for transformers, whose forced EOS takes its last step
    out = model.generate(**encoded, num_beams=1, do_sample=False, max_new_tokens=max_len + 1).numpy()[:, 1:]
  theirs = []
  for row in out[:, :max_len].tolist():
    row = row[:row.index(0)] if 0 in row else row
    theirs.append(theirs_tok.decode(row, skip_special_tokens=True))
  assert ours == theirs
  beam = translate.translate_lines(work, lines)  # the config's own beam_size and length_penalty_alpha
  assert len(beam) == len(lines) and all(isinstance(line, str) for line in beam)

  # Its training batches: EOS (id 0) ends every source and target and counts as a token; padding does not.
  config = experiment.workdir_config(work)
  config.update(dataset="text_files", data_dir=small_corpus_dir, data_cache_dir=str(tmp_path / "data_cache"))
  batch = first_train_batch(config, global_rows=4)
  examples = int(batch["targets_segment_ids"].max(axis=1).sum())  # segments are numbered 1..n in each row
  nonzero = sum(int((batch[k] != 0).sum()) for k in ("inputs", "targets"))
  assert examples > 0 and pipeline.count_tokens(batch) == nonzero + 2 * examples
  assert pipeline.count_target_tokens(batch) == int((batch["targets"] != 0).sum()) + examples  # the budget's count
