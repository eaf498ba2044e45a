"""Hugging Face state dicts <-> tx_jax parameters (nnx.State of nnx.Param), by parameter path.

Reading uses safetensors' numpy API (no torch); a pytorch_model.bin is read only where torch is
installed. Each architecture is one table of (tx_jax path, HF names, layout) rows, used both ways:
"T" transposes a torch nn.Linear weight [out, in] to a kernel [in, out]; "copy" keeps the layout
(GPT-2's Conv1D weights are already [in, out]); ("split", i, n) is the i-th of n column blocks of a
fused matrix (GPT-2's c_attn = query | key | value); "row" drops Marian's leading 1 of final_logits_bias.
"""

import json
import os

import jax
import jax.numpy as jnp
from flax import nnx

from tx_jax import errors
from tx_jax.interop import hf_config

# HF state-dict entries that are buffers or tied copies, not parameters of their own.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "position_ids", "embed_positions.weight")
# Heads a checkpoint may carry beside the one imported (bert-base-uncased's files hold BertForPreTraining's).
UNUSED_HEADS = ("bert.pooler.", "cls.seq_relationship.", "cls.predictions.")
SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"


def read_state_dict(hf_dir: str) -> dict:
  """{name: np.ndarray} of a HF model directory: model.safetensors, sharded safetensors, or pytorch_model.bin."""
  from safetensors.numpy import load_file
  single, index = os.path.join(hf_dir, SAFETENSORS), os.path.join(hf_dir, SAFETENSORS_INDEX)
  if os.path.exists(single):
    return dict(load_file(single))
  if os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for shard in shards:
      path = os.path.join(hf_dir, shard)
      if not os.path.exists(path):
        raise errors.DataError(f"{index} names the shard {shard}, which is missing from {hf_dir}.")
      out.update(load_file(path))
    return out
  binary = os.path.join(hf_dir, TORCH_BIN)
  if os.path.exists(binary):
    try:
      import torch
    except ImportError:
      raise errors.DataError(
        f"{binary} is a PyTorch pickle and torch is not installed; convert it to safetensors first (in an "
        "environment with torch and transformers: AutoModel.from_pretrained(DIR).save_pretrained(DIR, "
        "safe_serialization=True)) or pip install torch.") from None
    state = torch.load(binary, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}
  raise errors.DataError(f"{hf_dir} has none of {SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN}.")


def _norm(tx, hf, bias=True):
  """Rows of a norm: scale <- weight (and bias <- bias); older BERT files name them gamma and beta."""
  rows = [(tx + ("scale",), (hf + ".weight", hf + ".gamma"), "copy")]
  return rows + [(tx + ("bias",), (hf + ".bias", hf + ".beta"), "copy")] if bias else rows


def _dense(tx, hf, bias, layout="T"):
  """Rows of a dense layer: kernel <- weight (transposed for nn.Linear), bias <- bias."""
  rows = [(tx + ("kernel",), hf + ".weight", layout)]
  return rows + [(tx + ("bias",), hf + ".bias", "copy")] if bias else rows


def _attention(tx, hf, bias, names=("q_proj", "k_proj", "v_proj", "out_proj")):
  return [row for part, name in zip(("query", "key", "value", "out"), names)
          for row in _dense(tx + (part,), f"{hf}.{name}", bias)]


def param_rows(config) -> list:
  """The (tx_jax path tuple, HF name or names, layout) rows of a flat tx_jax config's model."""
  from tx_jax.models import config as config_lib
  architecture = hf_config.architecture_for(config)
  kind, task = hf_config.ARCHITECTURES[architecture]
  cfg = config_lib.ModelConfig.from_config(config)
  bias = cfg.use_bias
  rows = []
  if kind == "gpt2":
    rows += [(("embedder", "table", "embedding"), "transformer.wte.weight", "copy"),
             (("embedder", "position_table", "embedding"), "transformer.wpe.weight", "copy")]
    for i in range(cfg.num_decoder_layers):
      tx, hf = ("decoder", "blocks", i), f"transformer.h.{i}"
      rows += _norm(tx + ("self_attention_norm",), f"{hf}.ln_1")
      for j, part in enumerate(("query", "key", "value")):
        rows += [(tx + ("self_attention", part, "kernel"), f"{hf}.attn.c_attn.weight", ("split", j, 3)),
                 (tx + ("self_attention", part, "bias"), f"{hf}.attn.c_attn.bias", ("split", j, 3))]
      rows += _dense(tx + ("self_attention", "out"), f"{hf}.attn.c_proj", True, "copy")
      rows += _norm(tx + ("feed_forward_norm",), f"{hf}.ln_2")
      rows += _dense(tx + ("feed_forward", "wi"), f"{hf}.mlp.c_fc", True, "copy")
      rows += _dense(tx + ("feed_forward", "wo"), f"{hf}.mlp.c_proj", True, "copy")
    rows += _norm(("decoder", "final_norm"), "transformer.ln_f")
    if not cfg.tie_output_embedding:
      rows += _dense(("embedder", "output"), "lm_head", False)
  elif kind == "llama":
    rows += [(("embedder", "table", "embedding"), "model.embed_tokens.weight", "copy")]
    for i in range(cfg.num_decoder_layers):
      tx, hf = ("decoder", "blocks", i), f"model.layers.{i}"
      rows += _norm(tx + ("self_attention_norm",), f"{hf}.input_layernorm", False)
      rows += _attention(tx + ("self_attention",), f"{hf}.self_attn", bias, ("q_proj", "k_proj", "v_proj", "o_proj"))
      rows += _norm(tx + ("feed_forward_norm",), f"{hf}.post_attention_layernorm", False)
      rows += _dense(tx + ("feed_forward", "wi_gate"), f"{hf}.mlp.gate_proj", bias)
      rows += _dense(tx + ("feed_forward", "wi"), f"{hf}.mlp.up_proj", bias)
      rows += _dense(tx + ("feed_forward", "wo"), f"{hf}.mlp.down_proj", bias)
    rows += _norm(("decoder", "final_norm"), "model.norm", False)
    if not cfg.tie_output_embedding:
      rows += _dense(("embedder", "output"), "lm_head", False)
  elif kind == "bert":
    rows += [(("embedder", "table", "embedding"), "bert.embeddings.word_embeddings.weight", "copy"),
             (("embedder", "position_table", "embedding"), "bert.embeddings.position_embeddings.weight", "copy"),
             (("embedder", "token_type_table", "embedding"), "bert.embeddings.token_type_embeddings.weight", "copy")]
    rows += _norm(("embedder", "norm"), "bert.embeddings.LayerNorm")
    for i in range(cfg.num_encoder_layers):
      tx, hf = ("encoder", "blocks", i), f"bert.encoder.layer.{i}"
      rows += _attention(tx + ("self_attention",), f"{hf}.attention.self", True,
                         ("query", "key", "value", "../output.dense"))
      rows += _norm(tx + ("self_attention_norm",), f"{hf}.attention.output.LayerNorm")
      rows += _dense(tx + ("feed_forward", "wi"), f"{hf}.intermediate.dense", True)
      rows += _dense(tx + ("feed_forward", "wo"), f"{hf}.output.dense", True)
      rows += _norm(tx + ("feed_forward_norm",), f"{hf}.output.LayerNorm")
    if cfg.mlm_head:
      rows += _dense(("mlm_transform",), "cls.predictions.transform.dense", True)
      rows += _norm(("mlm_norm",), "cls.predictions.transform.LayerNorm")
      rows += [(("embedder", "output_bias"), ("cls.predictions.bias", "cls.predictions.decoder.bias"), "copy")]
    if cfg.pooler:
      rows += _dense(("pooler",), "bert.pooler.dense", True)
    if cfg.num_classes:
      rows += _dense(("classifier",), "classifier", True)
  else:  # marian
    rows += [(("embedder", "table", "embedding"),
              ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"),
              "copy"), (("embedder", "output_bias"), "final_logits_bias", "row")]
    for stack, n in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
      for i in range(n):
        tx, hf = (stack, "blocks", i), f"model.{stack}.layers.{i}"
        rows += _attention(tx + ("self_attention",), f"{hf}.self_attn", True)
        rows += _norm(tx + ("self_attention_norm",), f"{hf}.self_attn_layer_norm")
        if stack == "decoder":
          rows += _attention(tx + ("cross_attention",), f"{hf}.encoder_attn", True)
          rows += _norm(tx + ("cross_attention_norm",), f"{hf}.encoder_attn_layer_norm")
        rows += _dense(tx + ("feed_forward", "wi"), f"{hf}.fc1", True)
        rows += _dense(tx + ("feed_forward", "wo"), f"{hf}.fc2", True)
        rows += _norm(tx + ("feed_forward_norm",), f"{hf}.final_layer_norm")
  # "a.b.self.../output.dense" -> "a.b.output.dense" (BERT's attention output sits beside attention.self).
  fix = lambda name: name.replace(".self.../", ".")
  return [(tx, tuple(map(fix, hf)) if isinstance(hf, tuple) else fix(hf), layout) for tx, hf, layout in rows]


def _lookup(state_dict: dict, names, used: set):
  """The first of `names` in `state_dict`, also trying them without the base model prefix (a bare GPT2Model)."""
  names = (names,) if isinstance(names, str) else names
  for name in names:
    for candidate in (name, name.split(".", 1)[-1]):
      if candidate in state_dict:
        used.add(candidate)
        return state_dict[candidate]
  raise errors.DataError(f"The Hugging Face weights have no {names[0]!r}; is this a checkpoint of the architecture "
                         "its config.json names?")


def _to_tx(value, layout):
  """One HF weight in tx_jax's layout (jnp, so that it also runs on abstract arrays under jax.eval_shape)."""
  value = jnp.asarray(value, jnp.float32)
  if layout == "T":
    return value.T
  if layout == "row":
    return value.reshape(-1)
  if isinstance(layout, tuple):  # ("split", i, n): the i-th of n blocks of the last axis
    return jnp.split(value, layout[2], axis=-1)[layout[1]]
  return value


def abstract_params(config):
  """(graphdef, nnx.State of abstract nnx.Param) of the model a flat tx_jax config describes."""
  import ml_collections
  from tx_jax.models import registry
  config = ml_collections.ConfigDict(dict(config)) if isinstance(config, dict) else config
  model = nnx.eval_shape(lambda: registry.build_model(config, nnx.Rngs(0)))
  return nnx.split(model, nnx.Param)


def _path(path) -> tuple:
  """The plain keys of a jax tree path into an nnx.State or dict, without the Variable's trailing "value"."""
  keys = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
  keys = tuple(int(k) if isinstance(k, str) and k.isdigit() else k for k in keys)  # restored dicts: "0" -> 0
  return keys[:-1] if keys and keys[-1] == "value" else keys


def to_tx_params(config, state_dict: dict):
  """The tx_jax parameters (nnx.State of nnx.Param, float32) of a HF state dict, for a flat tx_jax config."""
  used = set()
  values = {tx: _to_tx(_lookup(state_dict, hf, used), layout) for tx, hf, layout in param_rows(config)}
  _, abstract = abstract_params(config)

  def fill(path, leaf):
    key = _path(path)
    if key not in values:
      raise errors.DataError(f"No Hugging Face weight maps to tx_jax parameter {'/'.join(map(str, key))}.")
    if values[key].shape != leaf.shape:
      raise errors.DataError(f"tx_jax parameter {'/'.join(map(str, key))} has shape {leaf.shape}, but its "
                             f"Hugging Face weight gives {values[key].shape}; config.json and the weights disagree.")
    return values[key].astype(leaf.dtype)

  params = jax.tree_util.tree_map_with_path(fill, abstract)
  extra = sorted(k for k in state_dict if k not in used and not k.endswith(IGNORED_SUFFIXES)
                 and not k.startswith(UNUSED_HEADS) and not _tied_copy(k, config))
  if extra:
    raise errors.DataError(f"The Hugging Face weights have {len(extra)} entries tx_jax does not use, e.g. "
                           f"{extra[:3]}; the architecture in config.json does not describe them.")
  return params


def _tied_copy(name: str, config) -> bool:
  """Whether `name` is a tied copy of the token table (an output projection or Marian's per-stack tables)."""
  tied = ("lm_head.weight", "cls.predictions.decoder.weight", "model.encoder.embed_tokens.weight",
          "model.decoder.embed_tokens.weight", "cls.predictions.decoder.bias")
  return name in tied and (config.get("tie_output_embedding", True) or name != "lm_head.weight")


def to_hf_state_dict(config, params) -> dict:
  """{HF name: float32 array} of tx_jax `params` (nnx.State or nested dict) for a flat tx_jax config.

  jnp throughout, so that it also runs on abstract arrays under jax.eval_shape.
  """
  flat = {_path(p): jnp.asarray(v, jnp.float32) for p, v in jax.tree_util.tree_leaves_with_path(params)}
  out, split = {}, {}
  for tx, hf, layout in param_rows(config):
    name = hf if isinstance(hf, str) else hf[0]
    if tx not in flat:
      raise errors.DataError(f"The tx_jax parameters have no {'/'.join(map(str, tx))}.")
    value = flat[tx]
    if layout == "T":
      out[name] = value.T
    elif layout == "row":
      out[name] = value.reshape(1, -1)
    elif isinstance(layout, tuple):
      split.setdefault(name, [None] * layout[2])[layout[1]] = value
    else:
      out[name] = value
  for name, parts in split.items():
    out[name] = jnp.concatenate(parts, axis=-1)
  return out
