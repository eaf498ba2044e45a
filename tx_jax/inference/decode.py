"""Greedy, sampling and beam-search decoding with a KV cache, each one compiled `jax.lax.while_loop`.

Written here rather than taken from a library: the search runs on tx_jax's own cache layout, in
which the beams of a sentence share its KV caches, so that no cache is copied between beams.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from absl import logging
from jax.experimental import multihost_utils

from tx_jax import parallel, xla_options
from tx_jax.data import pipeline
from tx_jax.data import tokenizer as tokenizer_lib

NEG_INF = -1.0e7


def length_penalty(length, alpha: float):
  """GNMT length penalty ((5 + length) / 6) ** alpha."""
  return ((5.0 + length) / 6.0) ** alpha


FIRST_STAGE_LEN = 16


def stage_lengths(max_len: int) -> list[int]:
  """Where the stages of a `max_len`-step decoding loop end: 16, 32, 64, ... (doubling), then max_len.

  Doubling keeps the stages few (each compiles its own loop body) and the cache never more than
  twice the steps it has to hold.
  """
  ends = [FIRST_STAGE_LEN]
  while ends[-1] < max_len:
    ends.append(2 * ends[-1])
  return ends[:-1] + [max_len]


def _while_in_stages(cond, body, carry, max_len: int, grow):
  """jax.lax.while_loop(cond(carry, end), body, carry) for the steps up to max_len; carry[-1] is the cache.

  Without `grow`, one loop over a cache made for max_len steps. With `grow(cache, steps) -> cache`,
  one loop per stage of `stage_lengths(max_len)`, and the cache (made for the first stage's steps)
  is grown to each stage's end before it: a step's self-attention then reads the slots that stage
  can fill, not all max_len (steps 0..15 read 16 slots, 16..31 read 32, 32..63 read 64: for 64
  steps 11/16 of the reads of one loop), at the price of compiling one loop body per stage.
  """
  if grow is None:
    return jax.lax.while_loop(functools.partial(cond, end=max_len), body, carry)
  for n, end in enumerate(stage_lengths(max_len)):
    if n:
      carry = (*carry[:-1], grow(carry[-1], end))
    carry = jax.lax.while_loop(functools.partial(cond, end=end), body, carry)
  return carry


def _one_by_one(step_fn, cache, batch_size: int, max_len: int, choose, eos_id: int, bos_id: int, grow=None):
  """Decodes one token per step with `choose(logits [b, vocab] float32, step) -> tokens [b]` until all hit EOS."""
  def cond(carry, end):
    i, _, _, done, _, _ = carry
    return (i < end) & ~jnp.all(done)

  def body(carry):
    i, last, out, done, scores, cache = carry
    logits, cache = step_fn(last, cache, i)
    logits = logits.astype(jnp.float32)
    token = choose(logits, i).astype(jnp.int32)
    scores = scores + jnp.where(done, 0.0, _log_prob_of(logits, token))
    token = jnp.where(done, 0, token)
    out = out.at[:, i].set(token)
    return i + 1, token, out, done | (token == eos_id), scores, cache

  init = (jnp.int32(0), jnp.full((batch_size,), bos_id, jnp.int32), jnp.zeros((batch_size, max_len), jnp.int32),
          jnp.zeros((batch_size,), bool), jnp.zeros((batch_size,)), cache)
  _, _, out, _, scores, _ = _while_in_stages(cond, body, init, max_len, grow)
  return out, scores


def _log_prob_of(logits, tokens):
  """log_softmax(logits)[tokens] as jax.nn.log_softmax computes it, without writing out the whole vocabulary."""
  top = jnp.max(logits, axis=-1, keepdims=True)
  chosen = jnp.take_along_axis(logits, tokens[:, None], axis=-1)
  return ((chosen - top) - jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1, keepdims=True)))[:, 0]


def _argmax(logits):
  """jnp.argmax(logits, -1), the first maximum, as two plain reductions (faster than XLA:CPU's argmax)."""
  first = jnp.where(logits == jnp.max(logits, axis=-1, keepdims=True), jnp.arange(logits.shape[-1]), logits.shape[-1])
  return jnp.min(first, axis=-1)


def greedy(step_fn, cache, batch_size: int, max_len: int, eos_id: int = tokenizer_lib.EOS_ID,
           bos_id: int = tokenizer_lib.BOS_ID, grow=None):
  """Argmax decoding; step_fn(tokens [b], cache, index) -> (logits [b, vocab], cache).

  Returns (tokens [b, max_len], sum of log-probabilities [b]); positions after EOS hold 0.
  With `grow(cache, steps) -> cache`, `cache` holds the first of `stage_lengths(max_len)` steps
  and is grown stage by stage (see `_while_in_stages`); without, it holds max_len steps.
  """
  return _one_by_one(step_fn, cache, batch_size, max_len, lambda logits, i: _argmax(logits), eos_id, bos_id,
                     grow)


def filter_logits(log_probs, top_k: int = 0, top_p: float = 1.0):
  """Keeps the `top_k` most likely tokens, then the smallest set of those whose probability reaches `top_p`.

  log_probs: [batch, vocab] logits or log-probabilities; the rest become -inf. The top-p mass is
  that of the distribution they define once normalised (after top-k, as Hugging Face's
  TopKLogitsWarper then TopPLogitsWarper). top_k=0 and top_p=1 keep everything.
  """
  if top_k > 0:
    kth = jax.lax.top_k(log_probs, top_k)[0][:, -1:]
    log_probs = jnp.where(log_probs < kth, -jnp.inf, log_probs)
  if top_p < 1.0:
    log_probs = jax.nn.log_softmax(log_probs)  # the mass of the kept tokens' own distribution
    sorted_lp = jnp.sort(log_probs, axis=-1)[:, ::-1]
    mass_before = jnp.cumsum(jnp.exp(sorted_lp), axis=-1) - jnp.exp(sorted_lp)
    # The smallest kept probability: the last sorted token whose preceding mass is still below p.
    cutoff = jnp.min(jnp.where(mass_before < top_p, sorted_lp, jnp.inf), axis=-1, keepdims=True)
    log_probs = jnp.where(log_probs < cutoff, -jnp.inf, log_probs)
  return log_probs


def sample(step_fn, cache, batch_size: int, max_len: int, rng, *, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0, eos_id: int = tokenizer_lib.EOS_ID, bos_id: int = tokenizer_lib.BOS_ID, grow=None):
  """Ancestral sampling at `temperature` from the top-k / top-p (nucleus) filtered distribution, seeded by rng.

  `grow` as in `greedy`.
  """
  def choose(logits, i):
    # The tempered distribution first: top-p's mass is that of what is sampled from.
    filtered = filter_logits(jax.nn.log_softmax(logits / max(temperature, 1e-6)), top_k, top_p)
    return jax.random.categorical(jax.random.fold_in(rng, i), filtered, axis=-1)

  return _one_by_one(step_fn, cache, batch_size, max_len, choose, eos_id, bos_id, grow)


def _gather_beams(tree, beam_indices, batch_size: int, beam_size: int):
  """Picks beams [batch, beam] (indices into the old beams) from the leaves shaped [batch * beam, ...].

  Leaves with another leading size (one row per sentence, shared by its beams) are left as they are.
  """
  rows = (jnp.arange(batch_size)[:, None] * beam_size + beam_indices).reshape(-1)  # one row gather
  per_beam = lambda x: beam_size > 1 and x.shape[0] == batch_size * beam_size
  return jax.tree.map(lambda x: jnp.take(x, rows, axis=0) if per_beam(x) else x, tree)


def beam_search(step_fn, cache, batch_size: int, beam_size: int, max_len: int, alpha: float = 0.6,
                eos_id: int = tokenizer_lib.EOS_ID, bos_id: int = tokenizer_lib.BOS_ID, grow=None):
  """Beam search with the GNMT length penalty; step_fn(tokens [b * beam], cache, index) -> (logits, cache).

  Cache leaves that lead with batch * beam follow their hypotheses (reordered whenever the beams
  are chosen); leaves with one row per sentence, such as the KV caches of
  `EncoderDecoder.init_cache(..., beam_size)`, are shared by its beams and never copied.
  `grow` as in `greedy`. Returns (sequences [b, beam, max_len], scores [b, beam]) sorted best
  first; score = sum log p / length_penalty(length, alpha).
  """
  b, k = batch_size, beam_size

  def cond(carry, end):
    i, _, alive_logp, _, fin_scores, _ = carry
    # Stop when no alive beam, even at the best possible length penalty, can beat the worst finished one.
    best_alive = alive_logp[:, 0] / length_penalty(max_len, alpha)
    worst_finished = jnp.min(fin_scores, axis=1)
    return (i < end) & ~jnp.all(worst_finished > best_alive)

  def body(carry):
    i, alive_seq, alive_logp, fin_seq, fin_scores, cache = carry
    last = jnp.where(i == 0, bos_id, alive_seq[:, :, jnp.maximum(i - 1, 0)]).reshape(b * k)
    logits, cache = step_fn(last, cache, i)
    vocab = logits.shape[-1]
    log_probs = alive_logp[:, :, None] + jax.nn.log_softmax(logits).reshape(b, k, vocab)
    top_logp, top_idx = jax.lax.top_k(log_probs.reshape(b, k * vocab), 2 * k)  # [b, 2k]
    top_beam, top_token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    top_seq = jnp.take_along_axis(alive_seq, top_beam[:, :, None], axis=1).at[:, :, i].set(top_token)
    is_eos = top_token == eos_id
    # Alive: the best k candidates that did not just end.
    alive_logp, pick = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_logp), k)
    alive_seq = jnp.take_along_axis(top_seq, pick[:, :, None], axis=1)
    cache = _gather_beams(cache, jnp.take_along_axis(top_beam, pick, axis=1), b, k)
    # Finished: candidates among the top k that just ended (as fairseq does, so beam size 1 is
    # greedy), merged with those finished before.
    ends = is_eos & (jnp.arange(2 * k) < k)[None, :]
    new_scores = jnp.where(ends, top_logp / length_penalty(i + 1, alpha), NEG_INF)
    fin_scores, pick = jax.lax.top_k(jnp.concatenate([fin_scores, new_scores], axis=1), k)
    fin_seq = jnp.take_along_axis(jnp.concatenate([fin_seq, top_seq], axis=1), pick[:, :, None], axis=1)
    return i + 1, alive_seq, alive_logp, fin_seq, fin_scores, cache

  init_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1)), (b, 1))
  seqs = jnp.zeros((b, k, max_len), jnp.int32)
  init = (jnp.int32(0), seqs, init_logp, seqs, jnp.full((b, k), NEG_INF), cache)
  i, alive_seq, alive_logp, fin_seq, fin_scores, _ = _while_in_stages(cond, body, init, max_len, grow)
  # Sentences with no finished hypothesis fall back to their alive beams.
  none_finished = jnp.all(fin_scores <= NEG_INF / 2, axis=1)
  alive_scores = alive_logp / length_penalty(i, alpha)
  seqs = jnp.where(none_finished[:, None, None], alive_seq, fin_seq)
  scores = jnp.where(none_finished[:, None], alive_scores, fin_scores)
  return seqs, scores


def ensemble_step(step_fns):
  """One decoding step of several models: the mean of their log-probabilities, each model with its own cache.

  step_fns[m](tokens, cache_m, i) -> (logits, cache_m); the ensemble's cache is the tuple of theirs.
  The mean of log-probabilities is a renormalised geometric mean of the distributions (as Marian
  ensembles); greedy and beam search take its log_softmax like any logits.
  """
  def step(tokens, caches, i):
    outs = [fn(tokens, cache, i) for fn, cache in zip(step_fns, caches)]
    log_probs = sum(jax.nn.log_softmax(logits.astype(jnp.float32)) for logits, _ in outs) / len(outs)
    return log_probs, tuple(cache for _, cache in outs)
  return step


def with_decoding_weights(graphdef, params):
  """(graphdef, params) of the same model with the weights its decoding calls derive stored once.

  Those are the stacked query-key-value (and cross-attention key-value) kernels and the tied output
  layer's transpose: a decoding call that finds them stored reads them instead of writing them first.
  Measured (experiments/README.md): a small-shape greedy batch 4.6 % faster; at the base shape, where
  XLA runs the stacking beside the encoder's products, no change. The stacks replace the projections
  they are made of, so the prepared params are as large as the given ones plus, when the output layer
  is tied, its transpose (under a bfloat16 compute dtype the matrices are stored in it: half the bytes);
  a caller that drops the given params holds each attention weight once. For decoding only: the prepared
  model cannot be trained. Tuples of several models (an ensemble) are prepared one by one; params
  prepared before are returned as they are.
  """
  if isinstance(graphdef, tuple):
    prepared = [with_decoding_weights(g, p) for g, p in zip(graphdef, params)]
    return tuple(g for g, _ in prepared), tuple(p for _, p in prepared)
  model = nnx.merge(graphdef, params)
  for _, module in nnx.iter_modules(model):
    if hasattr(module, "store_decoding_weights"):
      module.store_decoding_weights()
  graphdef, params = nnx.split(model, nnx.Param)
  return graphdef, _in_compute_dtype(params, model.cfg.compute_dtype)


def _in_compute_dtype(params, dtype):
  """`params` with every matrix (ndim >= 2) stored in the compute `dtype`; vectors (norms, biases) as they are.

  Each product casts its float32 kernel to a bfloat16 compute dtype anyway (tx_jax.models.matmul); stored
  cast, a decoding step reads half the bytes and casts nothing (a base greedy batch: experiments/README.md).
  Under float32 compute nothing changes.
  """
  if dtype == jnp.float32:
    return params
  return jax.tree.map(lambda w: w.astype(dtype) if w.ndim >= 2 and w.dtype != dtype else w, params)


def _decoder_step(model, segments, output_kernel):
  """step_fn(tokens, cache, i) -> (logits, cache) of one encoder-decoder model over encoded sources."""
  return lambda tokens, cache, i: model.decode_step(tokens, cache, i, segments, output_kernel)


@functools.partial(xla_options.jit, static_argnames=("graphdef", "beam_size", "max_len", "alpha", "bos_id", "eos_id"))
def translate_batch(graphdef, params, inputs, *, beam_size: int, max_len: int, alpha: float,
                    bos_id: int = tokenizer_lib.BOS_ID, eos_id: int = tokenizer_lib.EOS_ID):
  """Encodes once, then decodes source ids [b, src_len] -> best token ids [b, max_len].

  A sentence's beams share its encoding and KV caches (see `EncoderDecoder.init_cache`). Source
  tokens equal to the model's `pad_id` are padding; decoding starts from `bos_id`, stops at `eos_id`.
  `graphdef` and `params` may be tuples of several models sharing a vocabulary: an ensemble
  (`ensemble_step`), decoded in the same compiled loop.
  """
  ensemble = isinstance(graphdef, tuple)
  models = [nnx.merge(g, p) for g, p in zip(graphdef, params)] if ensemble else [nnx.merge(graphdef, params)]
  b = inputs.shape[0]
  step_fns, caches, grows = [], [], []
  for model in models:
    segments = (inputs != model.cfg.pad_id).astype(jnp.int32)
    encoded = model.encode(inputs, segments)
    caches.append(model.init_cache(encoded, stage_lengths(max_len)[0], beam_size))  # grown stage by stage
    output_kernel = model.output_kernel()
    step_fns.append(_decoder_step(model, segments, output_kernel))
    grows.append(model.grow_cache)
  if ensemble:
    step_fn, cache = ensemble_step(step_fns), tuple(caches)
    grow = lambda caches, n: tuple(g(c, n) for g, c in zip(grows, caches))
  else:
    step_fn, cache, grow = step_fns[0], caches[0], grows[0]
  if beam_size > 1:
    seqs, _ = beam_search(step_fn, cache, b, beam_size, max_len, alpha, eos_id, bos_id, grow=grow)
    return seqs[:, 0]
  return greedy(step_fn, cache, b, max_len, eos_id, bos_id, grow=grow)[0]


def decode_length(longest_source: int, max_predict_length: int) -> int:
  """Longest output allowed for a batch whose longest source has `longest_source` tokens.

  1.2 x source + 10 covers translations between European languages; rounding up to a multiple
  of 16 keeps the number of compiled shapes small.
  """
  return int(min(max_predict_length, -(-(int(1.2 * longest_source) + 10) // 16) * 16))


def translate_texts(graphdef, params, processor, texts, *, batch_size: int, beam_size: int, alpha: float,
                    max_predict_length: int, mesh=None, max_source_length: int | None = None):
  """Translates a list of strings; batches are sorted by length and padded to a few shapes.

  `graphdef` and `params` may be tuples of several models: their ensemble (see `translate_batch`).

  Sources longer than `max_source_length` tokens (EOS included) are cut to it, with a warning:
  one over-long line must not ask for the memory of its whole length squared.
  """
  encoded = processor.encode(list(texts))
  if max_source_length:
    cut = sum(len(ids) + 1 > max_source_length for ids in encoded)
    if cut:
      logging.warning("Cut %d of %d sources to their first %d tokens (config.max_eval_target_length).", cut,
                      len(encoded), max_source_length)
    encoded = [ids[:max_source_length - 1] for ids in encoded]
  sources = [np.asarray(ids + [processor.eos_id], np.int32) for ids in encoded]
  graphdef, params = with_decoding_weights(graphdef, params)
  outputs = [""] * len(sources)
  local_rows = batch_size // jax.process_count()
  pad_id = processor.pad_id  # the model's padding: tokens equal to it are masked out of the sources
  for ids, inputs in pipeline.source_batches(sources, global_rows=batch_size, pad_id=pad_id):
    max_len = decode_length(int((inputs != pad_id).sum(1).max()), max_predict_length)
    if mesh is not None:  # each process feeds its rows of the batch and gets every row back
      local = inputs[jax.process_index() * local_rows:(jax.process_index() + 1) * local_rows]
      inputs = parallel.global_batch({"inputs": local}, mesh)["inputs"]
    else:
      inputs = jnp.asarray(inputs)
    out = translate_batch(graphdef, params, inputs, beam_size=beam_size, max_len=max_len, alpha=alpha,
                          bos_id=processor.bos_id, eos_id=processor.eos_id)
    out = multihost_utils.process_allgather(out, tiled=True) if jax.process_count() > 1 else jax.device_get(out)
    out = np.asarray(out)
    for row, i in enumerate(ids):
      if i >= 0:
        outputs[i] = processor.detokenize(out[row])
  return outputs
