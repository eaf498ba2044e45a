"""Hugging Face import and export (tx_jax.interop): logits, greedy decoding, round trips, full-size shapes.

Every model is a tiny random one built here from its transformers config class; nothing is downloaded.
"""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from tx_jax import errors, export_hf, import_hf  # noqa: E402
from tx_jax.inference import decode  # noqa: E402
from tx_jax.interop import export, hf_config, hf_weights  # noqa: E402
from tx_jax.interop import workdir as workdir_lib  # noqa: E402

VOCAB = 64
PAD = VOCAB - 1  # Marian pads with (and starts decoding from) its last id and ends with id 0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_model(name: str):
  """A tiny random transformers model; every weight is perturbed so that no mapping hides behind ones or zeros."""
  torch.manual_seed(0)
  t = transformers
  if name == "gpt2":
    model = t.GPT2LMHeadModel(t.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64,
                                           bos_token_id=PAD, eos_token_id=PAD))
  elif name == "llama":
    model = t.LlamaForCausalLM(t.LlamaConfig(
      num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
      vocab_size=VOCAB, max_position_embeddings=64, rms_norm_eps=1e-5,
      rope_parameters={"rope_type": "default", "rope_theta": 50000.0}, bos_token_id=1, eos_token_id=2))
  elif name in ("bert_mlm", "bert_cls"):
    config = t.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48,
                          vocab_size=VOCAB, max_position_embeddings=64, num_labels=3)
    model = (t.BertForMaskedLM if name == "bert_mlm" else t.BertForSequenceClassification)(config)
  else:
    model = t.MarianMTModel(t.MarianConfig(
      encoder_layers=2, decoder_layers=2, d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
      encoder_ffn_dim=48, decoder_ffn_dim=48, vocab_size=VOCAB, max_position_embeddings=64,
      activation_function="swish", scale_embedding=True, pad_token_id=PAD, decoder_start_token_id=PAD,
      eos_token_id=0, forced_eos_token_id=0, init_std=0.3))
  with torch.no_grad():
    for p in model.parameters():
      if p.requires_grad:  # not Marian's frozen sinusoidal tables
        p.add_(0.05 * torch.randn_like(p))
    if name == "marian":
      model.final_logits_bias.normal_(std=0.1)
      for stack in (model.model.encoder, model.model.decoder):  # the frozen sinusoidal tables stay exact
        stack.embed_positions.weight.copy_(stack.embed_positions.create_weight())
  return model.eval()


NAMES = ("gpt2", "llama", "bert_mlm", "bert_cls", "marian")


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
  """name -> (transformers model, its save_pretrained directory)."""
  out = {}
  for name in NAMES:
    model = _tiny_model(name)
    d = str(tmp_path_factory.mktemp(name))
    model.save_pretrained(d)
    out[name] = (model, d)
  return out


def _load(hf_dir):
  """(flat config, graphdef, params) imported from a HF directory."""
  with open(os.path.join(hf_dir, "config.json")) as f:
    config = hf_config.from_hf(json.load(f))
  params = hf_weights.to_tx_params(config, hf_weights.read_state_dict(hf_dir))
  graphdef, _ = hf_weights.abstract_params(config)
  return config, graphdef, params


def _inputs():
  """Random ids [2, 9], a padding mask with the second row 3 shorter, token types, decoder ids [2, 6]."""
  rng = np.random.RandomState(1)
  ids = rng.randint(1, VOCAB - 1, (2, 9))
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  return ids, mask, rng.randint(0, 2, ids.shape), rng.randint(1, VOCAB - 1, (2, 6))


def _logits(name, model, graphdef=None, params=None):
  """(tx_jax logits, transformers logits) as numpy, padded positions dropped, for one tiny model."""
  ids, mask, types, dec = _inputs()
  t = lambda x: torch.tensor(x)
  tx = nnx.merge(graphdef, params) if graphdef is not None else None
  keep = mask.astype(bool)
  with torch.no_grad():
    if name in ("gpt2", "llama"):
      hf = model(t(ids)).logits.numpy()
      return (np.asarray(tx(jnp.asarray(ids))) if tx else None), hf
    if name == "bert_mlm":
      padded = ids * mask  # BERT pads with id 0
      hf = model(t(padded), attention_mask=t(mask), token_type_ids=t(types)).logits.numpy()[keep]
      return (np.asarray(tx(jnp.asarray(padded), token_types=jnp.asarray(types)))[keep] if tx else None), hf
    if name == "bert_cls":
      padded = ids * mask
      hf = model(t(padded), attention_mask=t(mask), token_type_ids=t(types)).logits.numpy()
      return (np.asarray(tx.classify(jnp.asarray(padded), token_types=jnp.asarray(types))) if tx else None), hf
    src = np.where(keep, ids, PAD)
    hf = model(input_ids=t(src), attention_mask=t(mask), decoder_input_ids=t(dec)).logits.numpy()
    return (np.asarray(tx(jnp.asarray(src), jnp.asarray(dec))) if tx else None), hf


@pytest.mark.parametrize("name", NAMES)
def test_imported_logits_match_transformers(hf_dirs, name):
  """Logits of the imported model equal the transformers forward pass (padding masked for BERT and Marian)."""
  model, d = hf_dirs[name]
  config, graphdef, params = _load(d)
  ours, theirs = _logits(name, model, graphdef, params)
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
  expected_task = {"gpt2": "lm", "llama": "lm", "bert_mlm": "mlm", "bert_cls": "classification",
                   "marian": "translation"}[name]
  assert config["task"] == expected_task


def test_imported_switches(hf_dirs):
  """The HF fields land on the right switches: GQA heads, rope_theta, untied head, epsilon, Marian's layout."""
  llama = _load(hf_dirs["llama"][1])[0]
  assert (llama["num_kv_heads"], llama["rope_theta"], llama["tie_output_embedding"]) == (2, 50000.0, False)
  assert llama["norm_epsilon"] == 1e-5 and llama["activation"] == "swiglu"
  marian = _load(hf_dirs["marian"][1])[0]
  assert marian["sinusoidal_timescales"] == "marian" and marian["scale_embeddings"] and marian["output_bias"]
  assert (marian["pad_id"], marian["bos_id"], marian["eos_id"], marian["activation"]) == (PAD, PAD, 0, "silu")
  bert = _load(hf_dirs["bert_cls"][1])[0]
  assert bert["num_classes"] == 3 and bert["pooler"] and bert["activation"] == "gelu_exact"
  assert _load(hf_dirs["gpt2"][1])[0]["activation"] == "gelu"  # GPT-2's gelu_new is the tanh approximation


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "eos_id"))
def _greedy_lm(graphdef, params, prompt, *, max_new_tokens: int, eos_id: int):
  """Greedy continuation of prompt [b, p] through the KV cache, as tx_jax.generate does at temperature 0."""
  model = nnx.merge(graphdef, params)
  batch, prompt_len = prompt.shape
  cache = model.init_cache(batch, prompt_len + decode.stage_lengths(max_new_tokens)[0])
  grow = lambda cache, new_tokens: model.grow_cache(cache, prompt_len + new_tokens)
  for i in range(prompt_len - 1):
    _, cache = model.decode_step(prompt[:, i], cache, i)
  output_kernel = model.output_kernel()
  step_fn = lambda tokens, cache, i: model.decode_step(tokens, cache, i + prompt_len - 1, output_kernel)
  return decode.greedy(step_fn, cache, batch, max_new_tokens, eos_id=eos_id, bos_id=prompt[:, -1], grow=grow)[0]


def _same_until_eos(ours, theirs, eos_id):
  """Each row of `ours` equals `theirs` up to and including its first EOS (what follows is padding)."""
  for a, b in zip(np.asarray(ours), np.asarray(theirs)):
    n = len(b)
    if eos_id in b.tolist():
      n = b.tolist().index(eos_id) + 1
    assert a[:n].tolist() == b[:n].tolist()


@pytest.mark.parametrize("name", ("gpt2", "llama"))
def test_greedy_generation_matches_transformers(hf_dirs, name):
  """Greedy decoding with tx_jax's KV cache produces the tokens of transformers' generate (num_beams=1)."""
  model, d = hf_dirs[name]
  _, graphdef, params = _load(d)
  prompt = np.random.RandomState(2).randint(3, VOCAB - 1, (2, 5))
  eos = model.config.eos_token_id
  with torch.no_grad():
    theirs = model.generate(torch.tensor(prompt), attention_mask=torch.ones_like(torch.tensor(prompt)),
                            max_new_tokens=20, do_sample=False, num_beams=1, eos_token_id=eos,
                            pad_token_id=0).numpy()[:, prompt.shape[1]:]
  ours = _greedy_lm(graphdef, params, jnp.asarray(prompt), max_new_tokens=20, eos_id=eos)
  _same_until_eos(ours, theirs, eos)


def test_greedy_translation_matches_transformers(hf_dirs):
  """decode.translate_batch with beam_size=1 produces the tokens of transformers' generate, padding included."""
  model, d = hf_dirs["marian"]
  config, graphdef, params = _load(d)
  ids, mask, _, _ = _inputs()
  src = np.where(mask.astype(bool), ids, PAD)
  # One step more for transformers, whose forced_eos_token_id makes its last step EOS; then drop its start token.
  generation = transformers.GenerationConfig(max_new_tokens=13, num_beams=1, do_sample=False,
                                             decoder_start_token_id=PAD, eos_token_id=0, pad_token_id=PAD)
  with torch.no_grad():
    theirs = model.generate(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask),
                            generation_config=generation).numpy()[:, 1:13]
  ours = decode.translate_batch(graphdef, params, jnp.asarray(src), beam_size=1, max_len=12, alpha=0.6,
                                bos_id=config["bos_id"], eos_id=config["eos_id"])
  _same_until_eos(ours, theirs, 0)


HF_CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "bert_mlm": "BertForMaskedLM",
              "bert_cls": "BertForSequenceClassification", "marian": "MarianMTModel"}


@pytest.mark.parametrize("name", NAMES)
def test_export_reimports_exactly_and_loads_in_transformers(hf_dirs, tmp_path, name):
  """Export then re-import gives the same parameters bit for bit; transformers loads the export, same logits."""
  model, d = hf_dirs[name]
  config, graphdef, params = _load(d)
  out = str(tmp_path / "exported")
  assert export.export_dir(config, params, out) == HF_CLASSES[name]
  config2, _, params2 = _load(out)
  assert {k: v for k, v in config2.items()} == config
  flat = lambda p: {k: np.asarray(v) for k, v in nnx.to_flat_state(p)}
  a, b = flat(params), flat(params2)
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  reloaded = getattr(transformers, HF_CLASSES[name]).from_pretrained(out).eval()
  _, theirs = _logits(name, model)
  _, reloaded_logits = _logits(name, reloaded)
  np.testing.assert_allclose(reloaded_logits, theirs, atol=1e-5, rtol=0)


def test_sharded_and_torch_bin_weights(hf_dirs, tmp_path, monkeypatch):
  """Sharded safetensors (with index) and pytorch_model.bin read the same; without torch a .bin is a DataError."""
  model, d = hf_dirs["gpt2"]
  single = hf_weights.read_state_dict(d)
  sharded = str(tmp_path / "sharded")
  model.save_pretrained(sharded, max_shard_size="20KB")
  assert os.path.exists(os.path.join(sharded, hf_weights.SAFETENSORS_INDEX))
  got = hf_weights.read_state_dict(sharded)
  assert got.keys() == single.keys() and all(np.array_equal(got[k], single[k]) for k in got)
  binary = tmp_path / "bin"
  binary.mkdir()
  torch.save({k: torch.from_numpy(v.copy()) for k, v in single.items()}, binary / hf_weights.TORCH_BIN)
  got = hf_weights.read_state_dict(str(binary))
  assert all(np.array_equal(got[k], single[k]) for k in single)
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
  with pytest.raises(errors.DataError, match="convert it to safetensors"):
    hf_weights.read_state_dict(str(binary))
  with pytest.raises(errors.DataError, match="has none of"):
    hf_weights.read_state_dict(str(tmp_path))


def test_bert_pretraining_files_import_as_masked_lm(hf_dirs):
  """Files in bert-base-uncased's layout (LayerNorm gamma/beta, pooler and next-sentence head) import too."""
  _, d = hf_dirs["bert_mlm"]
  config, _, params = _load(d)
  state = hf_weights.read_state_dict(d)
  old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
         for k, v in state.items()}
  old.update({"bert.pooler.dense.weight": np.zeros((32, 32), np.float32),
              "cls.seq_relationship.weight": np.zeros((2, 32), np.float32)})
  got = hf_weights.to_tx_params(config, old)
  a, b = dict(nnx.to_flat_state(params)), dict(nnx.to_flat_state(got))
  assert a.keys() == b.keys() and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
  with pytest.raises(errors.DataError, match="does not use"):
    hf_weights.to_tx_params(config, dict(state, **{"bert.encoder.extra.weight": np.zeros(3, np.float32)}))


def test_unsupported_fields_and_switches_name_themselves(hf_dirs):
  """Unsupported HF architectures and field values, and tx_jax switches without a HF counterpart, say which."""
  with open(os.path.join(hf_dirs["llama"][1], "config.json")) as f:
    llama = json.load(f)
  with pytest.raises(errors.ConfigError, match="rope_parameters.rope_type='llama3'"):
    hf_config.from_hf(dict(llama, rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}))
  with pytest.raises(errors.ConfigError, match="architectures='T5ForConditionalGeneration'"):
    hf_config.from_hf(dict(llama, architectures=["T5ForConditionalGeneration"]))
  with pytest.raises(errors.ConfigError, match="hidden_act='gelu'"):
    hf_config.from_hf(dict(llama, hidden_act="gelu"))
  with open(os.path.join(hf_dirs["gpt2"][1], "config.json")) as f:
    gpt2 = json.load(f)
  with pytest.raises(errors.ConfigError, match="scale_attn_by_inverse_layer_idx=True"):
    hf_config.from_hf(dict(gpt2, scale_attn_by_inverse_layer_idx=True))
  # tx_jax's own translation Transformer (pre-norm, tensor2tensor positions) has no Marian counterpart.
  tx_translation = {"task": "translation", "vocab_size": 100, "positions": "sinusoidal"}
  with pytest.raises(errors.ConfigError, match="config.sinusoidal_timescales='tensor2tensor'"):
    hf_config.to_hf(tx_translation)
  with pytest.raises(errors.ConfigError, match="config.norm_position='pre'"):
    hf_config.to_hf(dict(tx_translation, sinusoidal_timescales="marian"))
  with pytest.raises(errors.ConfigError, match="config.positions='sinusoidal'"):
    hf_config.to_hf({"task": "lm", "vocab_size": 100})
  with pytest.raises(errors.ConfigError, match="config.mlm_head=False"):
    hf_config.to_hf({"task": "mlm", "vocab_size": 100})
  gpt2_tx = hf_config.from_hf(gpt2)
  with pytest.raises(errors.ConfigError, match="config.num_kv_heads=2"):
    hf_config.to_hf(dict(gpt2_tx, num_kv_heads=2))


def test_workdir_import_export_and_tokenizer_files(hf_dirs, tmp_path):
  """import_dir writes config.json, a step-0 checkpoint and the tokenizer files; export_workdir reads them back."""
  from tokenizers import Tokenizer, models
  model, d = hf_dirs["gpt2"]
  src = tmp_path / "hf"
  model.save_pretrained(str(src))
  Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0")).save(str(src / "tokenizer.json"))
  work = str(tmp_path / "work")
  config = import_hf.import_dir(str(src), work)
  with open(os.path.join(work, "config.json")) as f:
    assert json.load(f) == config
  assert os.path.exists(os.path.join(work, "tokenizer", "tokenizer.json"))
  read_config, read_params = workdir_lib.read_workdir(work)
  _, _, params = _load(d)
  flat = {"/".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(params)}
  for path, value in jax.tree_util.tree_leaves_with_path(read_params):
    key = "/".join(map(str, hf_weights._path(path)))
    assert np.array_equal(np.asarray(value), flat.pop(key)), key
  assert not flat and read_config == config
  out = str(tmp_path / "out")
  assert export_hf.export_workdir(work, out) == "GPT2LMHeadModel"
  assert os.path.exists(os.path.join(out, "tokenizer.json"))
  reloaded = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
  np.testing.assert_allclose(_logits("gpt2", reloaded)[1], _logits("gpt2", model)[1], atol=1e-5, rtol=0)


def test_marian_tokenizer_files_are_copied(hf_dirs, tmp_path):
  """Marian's source.spm, target.spm and vocab.json go to W/tokenizer/ as they are."""
  _, d = hf_dirs["marian"]
  for name in ("source.spm", "target.spm", "vocab.json"):
    with open(os.path.join(d, name), "w") as f:
      f.write(name)
  work = str(tmp_path / "work")
  import_hf.import_dir(d, work)
  for name in ("source.spm", "target.spm", "vocab.json"):
    with open(os.path.join(work, "tokenizer", name)) as f:
      assert f.read() == name


def test_command_lines(hf_dirs, tmp_path):
  """python -m tx_jax.import_hf / export_hf run end to end; a user error is one line on stderr."""
  _, d = hf_dirs["bert_cls"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True,
                                     text=True, timeout=300)
  work, out = str(tmp_path / "work"), str(tmp_path / "out")
  r = run("tx_jax.import_hf", f"--hf_dir={d}", f"--workdir={work}")
  assert r.returncode == 0, r.stderr
  r = run("tx_jax.export_hf", f"--workdir={work}", f"--out={out}")
  assert r.returncode == 0, r.stderr
  assert transformers.BertForSequenceClassification.from_pretrained(out).config.num_labels == 3
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text(json.dumps({"architectures": ["T5ForConditionalGeneration"]}))
  r = run("tx_jax.import_hf", f"--hf_dir={bad}", f"--workdir={tmp_path / 'w2'}")
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1].startswith("tx_jax.import_hf: Hugging Face config field architectures=")


# Full-size shapes, converted on abstract arrays only: (transformers class, config, tx_jax parameter count).
# GPT-2 small and BERT-base are the published counts; BertForMaskedLM adds the MLM head's transform
# (768 x 768 + 768 + 2 x 768 LayerNorm) and its 30,522 output biases: 109,514,298, the figure
# transformers reports for bert-base-uncased; the classifier head over 2 labels adds 1,538.
# TinyLlama-1.1B (22 layers, d 2048, 32 heads / 4 KV heads, 5632 MLP, 32,000 tokens, untied):
# 1,100,048,384, the count its model card gives. opus-mt-de-en (6 + 6 layers, d 512, 8 heads, 2048 MLP,
# 58,101 shared tokens): 73,944,309 = transformers' 74,410,496 parameters less its two frozen 512 x 512
# sinusoidal tables (tx_jax computes them) plus the 58,101 final_logits_bias (a buffer there, a parameter here).
FULL_SIZE = {
  "gpt2_small": ("GPT2LMHeadModel", lambda: transformers.GPT2Config(), 124_439_808),
  "bert_base_mlm": ("BertForMaskedLM", lambda: transformers.BertConfig(), 109_514_298),
  "bert_base_cls": ("BertForSequenceClassification", lambda: transformers.BertConfig(), 109_482_240 + 1_538),
  "tinyllama_1.1b": ("LlamaForCausalLM", lambda: transformers.LlamaConfig(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
    vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5), 1_100_048_384),
  "opus_mt_de_en": ("MarianMTModel", lambda: transformers.MarianConfig(
    vocab_size=58101, decoder_vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
    encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
    max_position_embeddings=512, activation_function="swish", scale_embedding=True, pad_token_id=58100,
    decoder_start_token_id=58100, eos_token_id=0), 73_944_309),
}


@pytest.mark.parametrize("name", tuple(FULL_SIZE))
def test_full_size_shapes_convert_abstractly(name):
  """A published-size model converts both ways on shapes alone, with its published parameter count."""
  architecture, make_config, expected = FULL_SIZE[name]
  hf = make_config()
  with torch.device("meta"):
    model = getattr(transformers, architecture)(hf)
  hf_params = sum(p.numel() for p in model.parameters())
  state = {k: jax.ShapeDtypeStruct(tuple(v.shape), jnp.float32) for k, v in model.state_dict().items()}
  config = hf_config.from_hf(dict(hf.to_dict(), architectures=[architecture]))
  params = jax.eval_shape(lambda sd: hf_weights.to_tx_params(config, sd), state)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert count == expected
  if architecture == "MarianMTModel":
    assert hf_params == expected - 58101 + 2 * 512 * 512 == 74_410_496
  else:
    assert hf_params == expected
  back = jax.eval_shape(lambda p: hf_weights.to_hf_state_dict(config, p), params)
  for key, value in back.items():
    assert tuple(state[key].shape) == value.shape, key
