"""Sample continuations from a trained LM: python -m tx_jax.generate --workdir=DIR --prompt="..."

Greedy with --temperature=0; otherwise ancestral sampling with optional --top_k / --top_p.
"""

import functools

from tx_jax import host_memory

if __name__ == "__main__":
  host_memory.restart_with_tuned_malloc()  # first, before jax allocates anything (see tx_jax/host_memory.py)

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from tx_jax import command_line, configuration, errors, logging_utils, python_gc, tasks, xla_options
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.inference import decode, restore

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  flags.DEFINE_string("workdir", None, "A tx_jax.train workdir of a language model.")
  flags.DEFINE_string("prompt", "", "Text to continue (empty: start from nothing).")
  flags.DEFINE_integer("num_samples", 1, "Continuations to sample.")
  flags.DEFINE_integer("max_new_tokens", 64, "Most tokens generated per sample.")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 = greedy.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0 = all).")
  flags.DEFINE_float("top_p", 1.0, "Sample among the smallest set of tokens whose probability reaches p.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the newest.")
  flags.DEFINE_bool("use_ema", True, "Use the run's parameter EMA when it keeps one (config.ema_decay > 0).")
  flags.DEFINE_enum("dtype", None, list(configuration.CHOICES["dtype"]), "Compute dtype to sample in; default: "
                    "the run's config.dtype. bfloat16 pays on CPUs with AVX-512 BF16 or AMX (experiments/README.md).")


@functools.partial(xla_options.jit, static_argnames=("graphdef", "max_new_tokens", "temperature", "top_k", "top_p", "eos_id"))
def _generate(graphdef, params, prompt, rng, *, max_new_tokens, temperature, top_k, top_p,
              eos_id=tokenizer_lib.EOS_ID):
  """Feeds prompt [b, p] (BOS first) through the cache, then decodes up to max_new_tokens tokens."""
  model = nnx.merge(graphdef, params)
  batch, prompt_len = prompt.shape
  # The cache holds the prompt and the first stage of new tokens, and grows stage by stage (decode.greedy).
  cache = model.init_cache(batch, prompt_len + decode.stage_lengths(max_new_tokens)[0])
  grow = lambda cache, new_tokens: model.grow_cache(cache, prompt_len + new_tokens)
  for i in range(prompt_len - 1):  # prefill all but the last prompt token
    _, cache = model.decode_step(prompt[:, i], cache, i)
  # Decoding continues from the last prompt token, at positions offset by the prompt.
  output_kernel = model.output_kernel()
  step_fn = lambda tokens, cache, i: model.decode_step(tokens, cache, i + prompt_len - 1, output_kernel)
  if temperature == 0.0:
    return decode.greedy(step_fn, cache, batch, max_new_tokens, eos_id=eos_id, bos_id=prompt[0, -1], grow=grow)[0]
  return decode.sample(step_fn, cache, batch, max_new_tokens, rng, temperature=temperature, top_k=top_k,
                       top_p=top_p, eos_id=eos_id, bos_id=prompt[0, -1], grow=grow)[0]


def check_sampling(*, num_samples, max_new_tokens, temperature, top_k, top_p):
  """Raises ConfigError naming the first sampling setting outside its range."""
  checks = (("num_samples", num_samples, num_samples >= 1, "must be at least 1"),
            ("max_new_tokens", max_new_tokens, max_new_tokens >= 1, "must be at least 1"),
            ("temperature", temperature, temperature >= 0, "must be >= 0 (0: greedy)"),
            ("top_k", top_k, top_k >= 0, "must be >= 0 (0: every token)"),
            ("top_p", top_p, 0 < top_p <= 1, "must be in (0, 1] (1: every token)"))
  for name, value, ok, why in checks:
    if not ok:
      raise errors.ConfigError(f"--{name}={value} {why}.")


def generate(workdir: str, prompt: str, *, num_samples=1, max_new_tokens=64, temperature=1.0, top_k=0,
             top_p=1.0, seed=0, step=None, use_ema=True, dtype=None):
  """Continuations (strings) of `prompt` from the LM in `workdir` (computed in `dtype`, default the run's)."""
  check_sampling(num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                 top_p=top_p)
  config, graphdef, params, processor = restore.restore_for_inference(workdir, step, use_ema, dtype)
  if not tasks.is_language_model(config):
    raise errors.ConfigError(f"{workdir} holds a config.task={config.get('task', 'translation')!r} model; "
                             "tx_jax.generate needs a language model (task=lm).")
  ids = [processor.bos_id] + processor.encode(prompt)
  if len(ids) + max_new_tokens > config.max_len:  # learned positions would read past their table (NaN)
    raise errors.ConfigError(f"the prompt's {len(ids)} tokens (BOS included) and --max_new_tokens={max_new_tokens} "
                             f"pass the model's config.max_len={config.max_len} positions; shorten the prompt or "
                             f"lower --max_new_tokens to at most {max(config.max_len - len(ids), 0)}.")
  top_k = min(top_k, config.vocab_size)  # more than the vocabulary is all of it
  graphdef, params = decode.with_decoding_weights(graphdef, params)
  prompt_ids = jnp.asarray(np.tile(np.asarray(ids, np.int32), (num_samples, 1)))
  out = _generate(graphdef, params, prompt_ids, jax.random.key(seed), max_new_tokens=max_new_tokens,
                  temperature=float(temperature), top_k=top_k, top_p=float(top_p), eos_id=processor.eos_id)
  return [processor.detokenize(row) for row in np.asarray(out)]


def main(argv):
  """Prints --num_samples continuations of --prompt sampled from --workdir's language model."""
  del argv
  logging_utils.quiet_library_logs()
  if FLAGS.workdir is None:
    raise app.UsageError("--workdir is required.")
  python_gc.freeze()  # the imports: the collector's passes while restoring and decoding skip them
  with command_line.one_line_errors("tx_jax.generate"):
    samples = generate(FLAGS.workdir, FLAGS.prompt, num_samples=FLAGS.num_samples,
                       max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature, top_k=FLAGS.top_k,
                       top_p=FLAGS.top_p, seed=FLAGS.seed, step=FLAGS.step, use_ema=FLAGS.use_ema,
                       dtype=FLAGS.dtype)
  for s in samples:
    print(FLAGS.prompt + (" " if FLAGS.prompt else "") + s)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.generate"))
