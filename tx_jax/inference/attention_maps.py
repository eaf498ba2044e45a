"""Attention weights of a trained model on one sentence, per layer and head, with the token labels.

The weights are sown by `tx_jax.models.attention.Attention` on a `nnx.view(model, sow_weights=True)`
and collected with `nnx.capture`; the model as trained and decoded never computes anything extra.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tx_jax import errors, tasks
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.inference import decode

# The attention each model family has: kind -> (stack attribute, attention attribute in each Block).
KINDS = {
  "encoder_decoder": {"encoder_self": ("encoder", "self_attention"), "decoder_self": ("decoder", "self_attention"),
                      "cross": ("decoder", "cross_attention")},
  "decoder_only": {"self": ("decoder", "self_attention")},
  "encoder_only": {"self": ("encoder", "self_attention")},
}


@dataclasses.dataclass
class AttentionMap:
  """One kind of attention of one sentence: weights [layers, heads, q_len, k_len] and the axis labels."""

  weights: np.ndarray  # float32 [layers, heads, q_len, k_len]; each row sums to 1 over unmasked keys
  query_labels: list  # q_len SentencePiece pieces
  key_labels: list  # k_len SentencePiece pieces


def family_kinds(config) -> tuple:
  """The attention kinds of the config's model family, e.g. ('encoder_self', 'decoder_self', 'cross')."""
  return tuple(KINDS[tasks.get(config).family])


def pieces(processor, ids) -> list:
  """The tokenizer's pieces of token ids (SentencePiece: '▁' marks a word start; '<s>', '</s>' the specials)."""
  return [processor.id_to_piece(int(i)) for i in ids]


def greedy_target(graphdef, params, config, source_ids, bos_id: int = tokenizer_lib.BOS_ID,
                  eos_id: int = tokenizer_lib.EOS_ID) -> list:
  """The model's own greedy translation of source ids (EOS included) as target ids, without EOS."""
  max_len = decode.decode_length(len(source_ids), config.max_predict_length)
  out = decode.translate_batch(graphdef, params, jnp.asarray([source_ids], jnp.int32), beam_size=1,
                               max_len=max_len, alpha=config.length_penalty_alpha, bos_id=bos_id, eos_id=eos_id)
  ids = [int(i) for i in np.asarray(out)[0]]
  return ids[:ids.index(eos_id)] if eos_id in ids else ids


def _per_layer(intermediates, stack: str, attention: str):
  """Sown weights of `stack`'s `attention` modules, first sentence: [layers, heads, q_len, k_len].

  Each Block sows under its layer index (a Stack runs its blocks one by one while they sow, also
  with scan_layers).
  """
  layers = {}
  for path, variable in nnx.to_flat_state(intermediates):
    if path[0] == stack and path[-2:] == (attention, "attention_weights"):
      (weights,) = variable.get_value()  # [batch, heads, q_len, k_len]; each module runs once per pass
      layers[next(p for p in path if isinstance(p, int))] = weights[0]
  if not layers:
    raise errors.UserError(f"The model sowed no {stack}/{attention} weights (does it have such a stack?).")
  return jnp.stack([layers[i] for i in sorted(layers)])


@functools.partial(jax.jit, static_argnames=("graphdef", "family"))
def _sown_weights(graphdef, params, tokens, decoder_inputs=None, *, family: str) -> dict:
  """{kind: [layers, heads, q_len, k_len]} of one sentence: tokens (and decoder_inputs) [1, len]."""
  model = nnx.view(nnx.merge(graphdef, params), sow_weights=True)
  if family == "encoder_decoder":
    forward = lambda m: m(tokens, decoder_inputs)
  elif family == "decoder_only":
    forward = lambda m: m(tokens)
  else:
    forward = lambda m: m.encode(tokens)
  _, sown = nnx.capture(forward, nnx.Intermediate)(model)
  return {kind: _per_layer(sown, stack, attention) for kind, (stack, attention) in KINDS[family].items()}


def attention_weights(graphdef, params, config, processor, text: str, target: str | None = None) -> dict:
  """Attention maps {kind: AttentionMap} of `text` (and `target`) under the model (graphdef, params).

  encoder_decoder: the source is `text` + </s>; the decoder reads <s> + target, where target
  defaults to the model's greedy translation; decoder query rows are labelled with the token they
  predict (target + </s>), as alignment pictures are. decoder_only: <s> + text. encoder_only:
  text + </s>, after [CLS] (= <s>) for config.task='classification'.
  """
  task = tasks.get(config)
  family = task.family
  if target is not None and family != "encoder_decoder":
    raise errors.UserError(f"A target sentence is only read by encoder_decoder models, not {family}.")
  ids = processor.encode(text)
  as_batch = lambda x: jnp.asarray([x], jnp.int32)  # [1, len]
  if family == "encoder_decoder":
    bos, eos = processor.bos_id, processor.eos_id
    source = task.input_tokens(ids, processor)  # text + </s>
    target_ids = (greedy_target(graphdef, params, config, source, bos, eos) if target is None
                  else processor.encode_target(target))
    decoder_inputs = [bos] + target_ids
    weights = _sown_weights(graphdef, params, as_batch(source), as_batch(decoder_inputs), family=family)
    predicted = target_ids + [eos]
    src, dec_in, out = (pieces(processor, x) for x in (source, decoder_inputs, predicted))
    labels = {"encoder_self": (src, src), "decoder_self": (out, dec_in), "cross": (out, src)}
  else:
    tokens = task.input_tokens(ids, processor)  # <s> + text (decoder), text + </s> (encoder; [CLS] first to classify)
    weights = _sown_weights(graphdef, params, as_batch(tokens), family=family)
    labels = {"self": (pieces(processor, tokens),) * 2}
  return {kind: AttentionMap(np.asarray(weights[kind], np.float32), *labels[kind]) for kind in KINDS[family]}
