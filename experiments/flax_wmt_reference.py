"""The reference for decode_throughput.py: the Flax WMT example's own decoder at the same shapes.

python experiments/flax_wmt_reference.py --flax_wmt_dir=DIR [--shapes=small,base] [--batch=32]

DIR is `examples/wmt` of the Flax source release that matches the installed flax, fetched from
PyPI (nothing of it is copied into tx_jax):

  pip download --no-deps --no-binary :all: flax==$(python -c 'import flax; print(flax.__version__)')
  tar xzf flax-*.tar.gz   # DIR = flax-<version>/examples/wmt

It runs the example's `models.Transformer` (linen) and `decode.beam_search` the way its
`train.predict_step` does (sources encoded, then expanded to batch * beam; beam 1 for greedy), on
the same real sources, vocabulary, batch and lengths as decode_throughput.py, and counts output
tokens the same way, so the two scripts' tokens/s compare directly on one machine.
"""

import functools
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tx_jax import host_memory  # noqa: E402

if __name__ == "__main__" and host_memory.requested(sys.argv, default=False):
  host_memory.restart_with_tuned_malloc()  # the example with tx_jax's malloc; by default as it ships

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import decode_throughput as ours  # its flags, sources, shapes and timing  # noqa: E402

_FLAX_WMT_DIR = flags.DEFINE_string("flax_wmt_dir", None, "examples/wmt of the Flax source release.", required=True)


def load_example(directory: str):
  """The example's (models, decode) modules, imported from its directory (they import only flax/jax/numpy)."""
  if not os.path.isfile(os.path.join(directory, "models.py")):
    raise SystemExit(f"--flax_wmt_dir={directory} holds no models.py: point it at flax-<version>/examples/wmt "
                     "of the unpacked Flax source release (see this script's docstring).")
  sys.path.insert(0, directory)
  return importlib.import_module("models"), importlib.import_module("decode")


def make_decoder(models, decode, shape: dict, vocab_size: int, max_len: int):
  """(params, jitted fn(params, inputs, beam_size) -> sequences [batch, max_len]) of the example's model."""
  common = dict(vocab_size=vocab_size, output_vocab_size=vocab_size, share_embeddings=True,
                logits_via_embedding=True, emb_dim=shape["emb_dim"], qkv_dim=shape["emb_dim"],
                num_heads=shape["num_heads"], mlp_dim=shape["mlp_dim"], num_layers=shape["num_encoder_layers"],
                dropout_rate=0.0, attention_dropout_rate=0.0, deterministic=True,
                dtype=jnp.dtype(ours._DTYPE.value))
  init_config = models.TransformerConfig(**common)
  predict_config = models.TransformerConfig(**common, decode=True)
  params = models.Transformer(init_config).init(
    jax.random.key(0), jnp.ones((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32))["params"]

  @functools.partial(jax.jit, static_argnames=("beam_size",))
  def predict(params, inputs, beam_size):
    # As the example's initialize_cache and predict_step (train.py), without pmap.
    # (the cache has one row per sentence: beam_search expands it to the beams itself)
    cache = models.Transformer(predict_config).init(
      jax.random.key(0), jnp.ones(inputs.shape, jnp.int32), jnp.ones((inputs.shape[0], max_len + 1), jnp.int32))["cache"]
    encoded = decode.flat_batch_beam_expand(
      models.Transformer(predict_config).apply({"params": params}, inputs, method=models.Transformer.encode),
      beam_size)
    raw_inputs = decode.flat_batch_beam_expand(inputs, beam_size)

    def tokens_ids_to_logits(flat_ids, flat_cache):
      logits, new_vars = models.Transformer(predict_config).apply(
        {"params": params, "cache": flat_cache}, encoded, raw_inputs, flat_ids, mutable=["cache"],
        method=models.Transformer.decode)
      return logits.squeeze(axis=1), new_vars["cache"]

    # Its sequences start with the BOS slot (0), so it decodes max_decode_len - 1 tokens.
    seqs, _ = decode.beam_search(inputs, cache, tokens_ids_to_logits, beam_size=beam_size, alpha=0.6, eos_id=1,
                                 max_decode_len=max_len + 1)
    return seqs[:, -1, 1:]  # the example's beams are sorted worst to best

  return params, predict


def main(argv):
  del argv
  models, decode = load_example(_FLAX_WMT_DIR.value)
  sources = jnp.asarray(ours.real_sources(ours._BATCH.value, ours._SOURCE_LENGTH.value))
  max_len = ours._OUTPUT_LENGTH.value
  print(f"Flax WMT example ({_FLAX_WMT_DIR.value}): batch {ours._BATCH.value}, source length "
        f"{ours._SOURCE_LENGTH.value}, output length {max_len}, vocabulary 8000, {ours._DTYPE.value}, "
        f"{jax.devices()[0].platform}")
  print(f"malloc: {host_memory.describe()}")
  for name in ours._SHAPES.value:
    shape = ours.SHAPES[name]
    params, predict = make_decoder(models, decode, shape, 8000, max_len)
    print(f"{name} (d {shape['emb_dim']}, {shape['num_encoder_layers']}+{shape['num_decoder_layers']} layers):")
    for label, beam in (("greedy", 1), ("beam 4", 4)):
      seconds, tokens = ours.timed(lambda beam=beam: predict(params, sources, beam), ours._REPEATS.value)
      print(f"  {label:18s} {tokens / seconds:8.0f} output tokens/s  ({seconds:.2f} s per batch)")


if __name__ == "__main__":
  app.run(main)
