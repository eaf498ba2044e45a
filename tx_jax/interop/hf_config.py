"""Hugging Face config.json <-> flat tx_jax config: GPT-2, Llama, BERT (masked LM, classifier), Marian.

Each supported architecture is a set of tx_jax switches that it fixes (`FIXED`, set on import and
checked on export) plus the sizes read from its config.json. A field value the shared blocks cannot
reproduce stops with an errors.ConfigError naming the field.
"""

from tx_jax import errors

# Hugging Face architecture -> (kind, task). The kind names the weight layout in hf_weights.
ARCHITECTURES = {
  "GPT2LMHeadModel": ("gpt2", "lm"),
  "LlamaForCausalLM": ("llama", "lm"),
  "BertForMaskedLM": ("bert", "mlm"),
  "BertForSequenceClassification": ("bert", "classification"),
  "MarianMTModel": ("marian", "translation"),
}
MODEL_TYPES = {"gpt2": "gpt2", "llama": "llama", "bert": "bert", "marian": "marian"}

# The tx_jax switches (ModelConfig fields or properties) each kind fixes.
_NO_EXTRAS = dict(num_token_types=0, embedding_norm=False, logits_scale=1.0, mlm_head=False, pooler=False,
                  num_classes=0)
FIXED = {
  "gpt2": dict(_NO_EXTRAS, model_family="decoder_only", positions="learned", norm="layernorm", norm_position="pre",
               has_final_norm=True, use_bias=True, scale_embeddings=False, output_bias=False),
  "llama": dict(_NO_EXTRAS, model_family="decoder_only", positions="rope", norm="rmsnorm", norm_position="pre",
                has_final_norm=True, activation="swiglu", scale_embeddings=False, output_bias=False),
  "bert": dict(logits_scale=1.0, model_family="encoder_only", positions="learned", norm="layernorm",
               norm_position="post", has_final_norm=False, embedding_norm=True, use_bias=True,
               scale_embeddings=False, tie_output_embedding=True),
  "marian": dict(_NO_EXTRAS, model_family="encoder_decoder", positions="sinusoidal",
                 sinusoidal_timescales="marian", norm="layernorm", norm_position="post", has_final_norm=False,
                 use_bias=True, share_embeddings=True, tie_output_embedding=True, output_bias=True),
}
# Per BERT architecture, its head switches.
CLASSIFIER = "BertForSequenceClassification"
BERT_HEADS = {"BertForMaskedLM": dict(mlm_head=True, output_bias=True, pooler=False, num_classes=0),
              CLASSIFIER: dict(mlm_head=False, output_bias=False, pooler=True)}

# Hugging Face activation names -> tx_jax's (the non-gated ones; Llama's silu is the gated swiglu).
ACTIVATIONS = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact", "relu": "relu",
               "silu": "silu", "swish": "silu"}
ACTIVATIONS_BACK = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "silu": "silu"}
MARIAN_ACTIVATIONS_BACK = dict(ACTIVATIONS_BACK, silu="swish")


def _fail(field: str, value, why: str):
  raise errors.ConfigError(f"Hugging Face config field {field}={value!r} {why}")


def architecture_of(hf: dict, architecture: str | None = None) -> str:
  """The supported architecture named by `architecture`, or else by config.json's "architectures"."""
  if architecture is None:
    names = hf.get("architectures") or []
    if len(names) != 1:
      _fail("architectures", names, f"must name one of {tuple(ARCHITECTURES)} (or pass the architecture).")
    architecture = names[0]
  if architecture not in ARCHITECTURES:
    _fail("architectures", architecture, f"is not supported; tx_jax imports {tuple(ARCHITECTURES)}.")
  kind = ARCHITECTURES[architecture][0]
  if hf.get("model_type", kind) != kind:
    _fail("model_type", hf.get("model_type"), f"does not match the architecture {architecture} ({kind!r}).")
  return architecture


def _activation(hf: dict, field: str) -> str:
  value = hf.get(field, "gelu")
  if value not in ACTIVATIONS:
    _fail(field, value, f"is not supported; tx_jax has {tuple(ACTIVATIONS)}.")
  return ACTIVATIONS[value]


def _require(hf: dict, field: str, allowed, default=None):
  value = hf.get(field, default)
  if value not in allowed:
    _fail(field, value, f"is not supported (tx_jax imports only {tuple(allowed)}).")


def _special_ids(out: dict, hf: dict, **names):
  """Copies the integer special-token ids hf[name] into out[key] for key=name pairs."""
  for key, name in names.items():
    if isinstance(hf.get(name), int):
      out[key] = hf[name]


def _gpt2(hf: dict) -> dict:
  for field, allowed in (("scale_attn_weights", (True,)), ("scale_attn_by_inverse_layer_idx", (False,)),
                         ("add_cross_attention", (False,))):
    _require(hf, field, allowed, allowed[0])
  emb = hf["n_embd"]
  out = dict(vocab_size=hf["vocab_size"], max_len=hf["n_positions"], emb_dim=emb, num_heads=hf["n_head"],
             mlp_dim=hf.get("n_inner") or 4 * emb, num_decoder_layers=hf["n_layer"], num_encoder_layers=0,
             norm_epsilon=hf.get("layer_norm_epsilon", 1e-5), activation=_activation(hf, "activation_function"),
             tie_output_embedding=hf.get("tie_word_embeddings", True),
             dropout_rate=hf.get("resid_pdrop", 0.1), attention_dropout_rate=hf.get("attn_pdrop", 0.1))
  _special_ids(out, hf, bos_id="bos_token_id", eos_id="eos_token_id", pad_id="pad_token_id")
  _pad_with_eos(out, hf)
  return out


def _pad_with_eos(out: dict, hf: dict):
  """A decoder-only model without a padding token pads with its (first) EOS, as Hugging Face's generate does.

  Without this the workdir would keep tx_jax's default pad_id 0, a real token of these vocabularies
  (GPT-2's "!"), which detokenizing leaves out as padding.
  """
  eos = hf.get("eos_token_id")
  eos = eos[0] if isinstance(eos, list) and eos else eos
  if "pad_id" not in out and isinstance(eos, int):
    out["pad_id"] = eos


def _rope_theta(hf: dict) -> float:
  """rope_theta from transformers 5's rope_parameters or the older rope_theta / rope_scaling fields."""
  rope = hf.get("rope_parameters") or {}
  if hf.get("rope_scaling"):
    rope = {**hf["rope_scaling"], **rope}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    _fail("rope_parameters.rope_type", rope_type, "is not supported; tx_jax's RoPE is the default (unscaled) one.")
  return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _llama(hf: dict) -> dict:
  _require(hf, "hidden_act", ("silu",), "silu")
  if bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)):
    _fail("mlp_bias", hf.get("mlp_bias"), f"must equal attention_bias={hf.get('attention_bias')!r}: tx_jax's "
          "use_bias switch covers both.")
  emb, heads = hf["hidden_size"], hf["num_attention_heads"]
  out = dict(vocab_size=hf["vocab_size"], max_len=hf.get("max_position_embeddings", 2048), emb_dim=emb,
             num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads, mlp_dim=hf["intermediate_size"],
             num_decoder_layers=hf["num_hidden_layers"], num_encoder_layers=0, rope_theta=_rope_theta(hf),
             norm_epsilon=hf.get("rms_norm_eps", 1e-6), use_bias=bool(hf.get("attention_bias", False)),
             tie_output_embedding=bool(hf.get("tie_word_embeddings", False)), dropout_rate=0.0,
             attention_dropout_rate=float(hf.get("attention_dropout", 0.0)))
  if hf.get("head_dim") and hf["head_dim"] != emb // heads:
    out["head_dim"] = hf["head_dim"]
  _special_ids(out, hf, bos_id="bos_token_id", eos_id="eos_token_id", pad_id="pad_token_id")
  _pad_with_eos(out, hf)
  return out


def _bert(hf: dict, architecture: str) -> dict:
  _require(hf, "position_embedding_type", ("absolute",), "absolute")
  _require(hf, "is_decoder", (False,), False)
  _require(hf, "add_cross_attention", (False,), False)
  out = dict(vocab_size=hf["vocab_size"], max_len=hf.get("max_position_embeddings", 512), emb_dim=hf["hidden_size"],
             num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"],
             num_encoder_layers=hf["num_hidden_layers"], num_decoder_layers=0,
             num_token_types=hf.get("type_vocab_size", 2), norm_epsilon=hf.get("layer_norm_eps", 1e-12),
             activation=_activation(hf, "hidden_act"), dropout_rate=hf.get("hidden_dropout_prob", 0.1),
             attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1), **BERT_HEADS[architecture])
  if out["num_token_types"] < 1:
    _fail("type_vocab_size", out["num_token_types"], "must be at least 1.")
  if architecture == CLASSIFIER:
    labels = hf.get("id2label") or {}
    num = len(labels) or hf.get("num_labels", 2)
    if num < 2:
      _fail("num_labels", num, "must be at least 2: tx_jax classifiers are single-label, not regression.")
    _require(hf, "problem_type", (None, "single_label_classification"))
    out["num_classes"] = num
    if labels:
      out["class_names"] = [labels[k] for k in sorted(labels, key=int)]
  _special_ids(out, hf, pad_id="pad_token_id")
  return out


def _marian(hf: dict) -> dict:
  for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
    if hf[enc] != hf[dec]:
      _fail(dec, hf[dec], f"must equal {enc}={hf[enc]!r}: tx_jax's encoder and decoder share num_heads and mlp_dim.")
  if hf.get("decoder_vocab_size") not in (None, hf["vocab_size"]):
    _fail("decoder_vocab_size", hf["decoder_vocab_size"], f"must equal vocab_size={hf['vocab_size']}.")
  _require(hf, "share_encoder_decoder_embeddings", (True,), True)
  _require(hf, "tie_word_embeddings", (True,), True)
  _require(hf, "normalize_before", (False,), False)
  if hf["d_model"] % 2:
    _fail("d_model", hf["d_model"], "must be even for tx_jax's sinusoidal positions.")
  out = dict(vocab_size=hf["vocab_size"], max_len=hf.get("max_position_embeddings", 512), emb_dim=hf["d_model"],
             num_heads=hf["encoder_attention_heads"], mlp_dim=hf["encoder_ffn_dim"],
             num_encoder_layers=hf["encoder_layers"], num_decoder_layers=hf["decoder_layers"], norm_epsilon=1e-5,
             activation=_activation(hf, "activation_function"), scale_embeddings=bool(hf.get("scale_embedding")),
             dropout_rate=hf.get("dropout", 0.1), attention_dropout_rate=hf.get("attention_dropout", 0.0))
  _special_ids(out, hf, pad_id="pad_token_id", eos_id="eos_token_id", bos_id="decoder_start_token_id")
  return out


def from_hf(hf: dict, architecture: str | None = None) -> dict:
  """A flat tx_jax config dict (model fields, model_family, task, special ids) from a HF config.json dict."""
  architecture = architecture_of(hf, architecture)
  kind, task = ARCHITECTURES[architecture]
  sizes = {"gpt2": _gpt2, "llama": _llama, "marian": _marian}[kind](hf) if kind != "bert" else _bert(hf, architecture)
  fixed = {k: v for k, v in FIXED[kind].items() if k != "has_final_norm"}  # implied by norm_position
  return dict(fixed, **sizes, task=task, hf_architecture=architecture)


def _check(cfg, kind: str, wanted: dict):
  """Raises ConfigError naming the first switch of ModelConfig `cfg` that differs from `wanted`."""
  for field, value in wanted.items():
    if field == "model_family":
      continue
    have = getattr(cfg, field)
    if have != value:
      raise errors.ConfigError(f"config.{field}={have!r} has no Hugging Face {kind} counterpart; "
                               f"{kind} needs {field}={value!r}.")


def architecture_for(config) -> str:
  """The HF architecture a flat tx_jax config exports to (ConfigError naming a switch if there is none)."""
  from tx_jax import tasks  # the family the registry builds for the config's task
  family = tasks.get(config).family
  positions = config.get("positions", "sinusoidal")
  if family == "decoder_only":
    if positions not in ("learned", "rope"):
      raise errors.ConfigError(f"config.positions={positions!r} has no Hugging Face counterpart for a "
                               "decoder_only model: GPT-2 needs 'learned', Llama 'rope'.")
    return "GPT2LMHeadModel" if positions == "learned" else "LlamaForCausalLM"
  if family == "encoder_only":
    if config.get("num_classes", 0):  # a classification head
      return CLASSIFIER
    if not config.get("mlm_head", False):
      raise errors.ConfigError("config.mlm_head=False has no Hugging Face counterpart: BertForMaskedLM needs "
                               "BERT's prediction-head transform (mlm_head=True, output_bias=True).")
    return "BertForMaskedLM"
  if family == "encoder_decoder":
    return "MarianMTModel"
  raise errors.ConfigError(f"config.model_family={family!r} has no Hugging Face counterpart.")


def to_hf(config) -> dict:
  """The HF config.json dict of a flat tx_jax config (a dict or ConfigDict); ConfigError names a misfit."""
  from tx_jax.models import config as config_lib  # the model's effective switches, defaults applied
  architecture = architecture_for(config)
  kind, _ = ARCHITECTURES[architecture]
  cfg = config_lib.ModelConfig.from_config(config)
  wanted = dict(FIXED[kind], **(BERT_HEADS[architecture] if kind == "bert" else {}))
  _check(cfg, kind, wanted)
  if cfg.kv_heads != cfg.num_heads and kind != "llama":
    raise errors.ConfigError(f"config.num_kv_heads={cfg.num_kv_heads!r} has no Hugging Face {kind} counterpart; "
                             f"{kind} needs multi-head attention (num_kv_heads = num_heads).")
  if cfg.head_dim and cfg.head_dim * cfg.num_heads != cfg.emb_dim and kind != "llama":
    raise errors.ConfigError(f"config.head_dim={cfg.head_dim!r} has no Hugging Face {kind} counterpart; "
                             f"{kind} needs head_dim = emb_dim / num_heads.")
  back = MARIAN_ACTIVATIONS_BACK if kind == "marian" else ACTIVATIONS_BACK
  if kind != "llama" and cfg.activation not in back:
    raise errors.ConfigError(f"config.activation={cfg.activation!r} has no Hugging Face {kind} counterpart; "
                             f"use one of {tuple(back)}.")
  get = lambda key: config.get(key) if isinstance(config.get(key), int) else None
  hf = {"architectures": [architecture], "model_type": MODEL_TYPES[kind]}
  if kind == "gpt2":
    hf.update(vocab_size=cfg.vocab_size, n_positions=cfg.max_len, n_embd=cfg.emb_dim, n_head=cfg.num_heads,
              n_inner=cfg.mlp_dim, n_layer=cfg.num_decoder_layers, layer_norm_epsilon=cfg.norm_epsilon,
              activation_function=back[cfg.activation], resid_pdrop=cfg.dropout_rate, embd_pdrop=cfg.dropout_rate,
              attn_pdrop=cfg.attention_dropout_rate, tie_word_embeddings=cfg.tie_output_embedding,
              bos_token_id=get("bos_id"), eos_token_id=get("eos_id"), pad_token_id=get("pad_id"))
  elif kind == "llama":
    hf.update(vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_len, hidden_size=cfg.emb_dim,
              num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.kv_heads, head_dim=cfg.qkv_head_dim,
              intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_decoder_layers, hidden_act="silu",
              rms_norm_eps=cfg.norm_epsilon, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
              attention_bias=cfg.use_bias, mlp_bias=cfg.use_bias, tie_word_embeddings=cfg.tie_output_embedding,
              attention_dropout=cfg.attention_dropout_rate, bos_token_id=get("bos_id"), eos_token_id=get("eos_id"),
              pad_token_id=get("pad_id"))
  elif kind == "bert":
    hf.update(vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_len, hidden_size=cfg.emb_dim,
              num_attention_heads=cfg.num_heads, intermediate_size=cfg.mlp_dim,
              num_hidden_layers=cfg.num_encoder_layers, type_vocab_size=cfg.num_token_types,
              layer_norm_eps=cfg.norm_epsilon, hidden_act=back[cfg.activation],
              hidden_dropout_prob=cfg.dropout_rate, attention_probs_dropout_prob=cfg.attention_dropout_rate,
              position_embedding_type="absolute", pad_token_id=cfg.pad_id)
    if architecture == CLASSIFIER:
      if cfg.num_classes < 2:
        raise errors.ConfigError(f"config.num_classes={cfg.num_classes!r} must be at least 2 to export a classifier.")
      names = list(config.get("class_names") or [f"LABEL_{i}" for i in range(cfg.num_classes)])
      hf.update(id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
                problem_type="single_label_classification")
  else:
    hf.update(vocab_size=cfg.vocab_size, decoder_vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_len,
              d_model=cfg.emb_dim, encoder_attention_heads=cfg.num_heads, decoder_attention_heads=cfg.num_heads,
              encoder_ffn_dim=cfg.mlp_dim, decoder_ffn_dim=cfg.mlp_dim, encoder_layers=cfg.num_encoder_layers,
              decoder_layers=cfg.num_decoder_layers, activation_function=back[cfg.activation],
              scale_embedding=cfg.scale_embeddings, dropout=cfg.dropout_rate,
              attention_dropout=cfg.attention_dropout_rate, share_encoder_decoder_embeddings=True,
              tie_word_embeddings=True, is_encoder_decoder=True, pad_token_id=cfg.pad_id,
              eos_token_id=get("eos_id"), decoder_start_token_id=get("bos_id"), forced_eos_token_id=get("eos_id"))
    if abs(cfg.norm_epsilon - 1e-5) > 1e-12:
      raise errors.ConfigError(f"config.norm_epsilon={cfg.norm_epsilon!r} has no Hugging Face marian counterpart; "
                               "Marian's LayerNorms use 1e-5.")
  return hf
