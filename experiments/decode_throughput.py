"""Decode throughput of the encoder-decoder: greedy and beam 4, with the KV cache and without it.

python experiments/decode_throughput.py [--shapes=small,base] [--batch=32] [--source_length=64] [--dtype=bfloat16]

Sources are real German sentences from the LibreOffice help test split (the vocabulary of
configs/default.py, fetched and trained on first use), packed to `source_length` tokens. The
weights are freshly initialised: throughput depends on shapes, not on what was learnt. Tokens
are counted up to and including each row's EOS (the search stops once every row has one).
experiments/flax_wmt_reference.py measures the Flax WMT example's decoder the same way.

It runs as tx_jax.translate does, with tx_jax's tuned malloc (tx_jax/host_memory.py), unless
--notuned_malloc, and with its imports frozen out of Python's collector (tx_jax/python_gc.py);
flax_wmt_reference.py runs the example as it ships, with glibc's default, unless --tuned_malloc
(as train_vs_peers.py's --tuned_malloc=tx_jax|all).
"""

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tx_jax import host_memory  # noqa: E402

if __name__ == "__main__" and host_memory.requested(sys.argv, default=True):
  host_memory.restart_with_tuned_malloc()  # as tx_jax.translate runs: before jax allocates (tx_jax/host_memory.py)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402

from configs import default  # noqa: E402
from tx_jax import configuration, python_gc, tasks, xla_options  # noqa: E402
from tx_jax.inference import decode  # noqa: E402
from tx_jax.models.config import ModelConfig  # noqa: E402
from tx_jax.models.encoder_decoder import EncoderDecoder  # noqa: E402
from tx_jax.training import perf  # noqa: E402

_SHAPES = flags.DEFINE_list("shapes", ["small", "base"], "Model shapes to measure.")
_BATCH = flags.DEFINE_integer("batch", 32, "Sentences per batch.")
_SOURCE_LENGTH = flags.DEFINE_integer("source_length", 64, "Source tokens per sentence.")
_OUTPUT_LENGTH = flags.DEFINE_integer("output_length", 64, "Tokens decoded per sentence.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls (the best is reported).")
flags.DEFINE_bool("tuned_malloc", None,
                  "Read from the command line before jax starts: decode_throughput.py runs with tx_jax's tuned malloc "
                  "as tx_jax.translate does unless --notuned_malloc; flax_wmt_reference.py runs the example with "
                  "glibc's default malloc, as it ships, unless --tuned_malloc.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(configuration.CHOICES["dtype"]),
                           "Compute dtype: tx_jax's ModelConfig.dtype here (bf16 operands, float32 accumulation), "
                           "the example's TransformerConfig.dtype in flax_wmt_reference.py.")
_WITHOUT_CACHE = flags.DEFINE_bool("without_cache", True,
                                   "Also time greedy decoding without the KV cache (~20x slower than with it).")

SHAPES = {
  "small": dict(emb_dim=256, num_heads=4, mlp_dim=1024, num_encoder_layers=3, num_decoder_layers=3),
  "base": dict(emb_dim=512, num_heads=8, mlp_dim=2048, num_encoder_layers=6, num_decoder_layers=6),
}


def real_sources(batch: int, length: int) -> np.ndarray:
  """[batch, length] token ids: consecutive test-split sentences concatenated and cut to `length`."""
  config = default.get_config()
  task = tasks.get(config)
  tokenizer = task.tokenizer(config, train=True)  # trained on first use, like tx_jax.train's
  stream = np.concatenate([e["inputs"] for e in task.evaluated_examples(config, tokenizer, "test")])
  return stream[:batch * length].reshape(batch, length).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_len"))
def greedy_without_cache(graphdef, params, inputs, *, max_len: int):
  """Greedy decoding that reruns the decoder over the whole prefix at every step (no KV cache)."""
  model = nnx.merge(graphdef, params)
  segments = (inputs != 0).astype(jnp.int32)
  encoded = model.encode(inputs, segments)
  out = jnp.zeros((inputs.shape[0], max_len + 1), jnp.int32).at[:, 0].set(3)  # BOS

  def body(i, out):
    logits = model.decode(out[:, :-1], encoded, segments)  # causal: positions > i do not matter
    return out.at[:, i + 1].set(jnp.argmax(logits[:, i], axis=-1).astype(jnp.int32))

  return jax.lax.fori_loop(0, max_len, body, out)[:, 1:]


def timed(fn, repeats: int):
  """(best wall time of `repeats` calls after one compiling call, output tokens up to and with EOS)."""
  out = np.asarray(jax.block_until_ready(fn()))
  best = perf.fastest_seconds(lambda: jax.block_until_ready(fn()), repeats)
  ends = np.where((out == 1).any(1), (out == 1).argmax(1) + 1, out.shape[1])  # EOS (id 1) ends a row
  return best, int(ends.sum())


def main(argv):
  del argv
  python_gc.freeze()  # as tx_jax.translate does
  sources = jnp.asarray(real_sources(_BATCH.value, _SOURCE_LENGTH.value))
  n_out = _BATCH.value * _OUTPUT_LENGTH.value
  print(f"batch {_BATCH.value}, source length {_SOURCE_LENGTH.value}, output length {_OUTPUT_LENGTH.value}, "
        f"vocabulary 8000, {_DTYPE.value}, {jax.devices()[0].platform}, compile options {xla_options.describe()}")
  print(f"malloc: {host_memory.describe()}")
  for name in _SHAPES.value:
    cfg = ModelConfig(vocab_size=8000, dropout_rate=0.0, attention_dropout_rate=0.0, dtype=_DTYPE.value,
                      **SHAPES[name])
    graphdef, params = nnx.split(EncoderDecoder(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    # As translate_texts does once per call (for all its batches): the derived weights stored, not re-derived.
    graphdef, params = decode.with_decoding_weights(graphdef, params)
    results = {}
    for label, beam in (("greedy", 1), ("beam 4", 4)):
      fn = lambda beam=beam: decode.translate_batch(graphdef, params, sources, beam_size=beam,
                                                    max_len=_OUTPUT_LENGTH.value, alpha=0.6)
      results[label] = timed(fn, _REPEATS.value)
    if _WITHOUT_CACHE.value:
      results["greedy, no cache"] = timed(
        lambda: greedy_without_cache(graphdef, params, sources, max_len=_OUTPUT_LENGTH.value), _REPEATS.value)
    print(f"{name} (d {cfg.emb_dim}, {cfg.num_encoder_layers}+{cfg.num_decoder_layers} layers):")
    for label, (seconds, tokens) in results.items():
      print(f"  {label:18s} {tokens / seconds:8.0f} output tokens/s  ({seconds:.2f} s per batch, "
            f"{tokens} of {n_out} tokens before EOS)")
    rate = {k: tokens / seconds for k, (seconds, tokens) in results.items()}
    if "greedy, no cache" in rate:
      print(f"  KV cache speed-up over recomputing the prefix (greedy): "
            f"{rate['greedy'] / rate['greedy, no cache']:.1f}x")


if __name__ == "__main__":
  app.run(main)
