"""Training step side by side: tx_jax, the Flax WMT example and PyTorch eager nn.Transformer, same shapes.

python experiments/train_vs_peers.py --flax_wmt_dir=DIR [--shape=small|base|both] [--dtype=float32|bfloat16]
    [--steps=10] [--rounds=3] [--systems=tx_jax,flax_wmt,torch_eager] [--tx_jax_flags="--config.x=y ..."]...
    [--tuned_malloc=tx_jax|all|none]

DIR is `examples/wmt` of the Flax source release matching the installed flax (see
experiments/flax_wmt_reference.py for the two commands that fetch it; nothing of it is copied here).

Every system trains on the same random batches (fixed seed; 32 pairs of 64-token sources and
targets, unpacked, the same rows padded the same way for all), vocabulary 8000, dropout and
attention dropout 0.1, Adam(0.9, 0.98, 1e-9) with linear warmup then inverse square root, label
smoothing 0.1, one embedding table shared by source and target and tied to the output layer,
sinusoidal positions, ReLU feed-forward, pre-norm. Each (round, shape, system) is a fresh process,
and the rounds interleave the systems; the table has the median over rounds of each process's
median step. FLOPs are tx_jax's analytic count (tx_jax/training/perf.py train_flops) for every
system. Every process runs two untimed steps first: the first compiles (the compile column), the
second warms up (the Flax example's pmapped step compiles again on its second call, as in its own
loop: the replicated state's layout changes after the first update); the per-round lines show
both. The matmul ceilings are float32 [2048, 2048] products, best of 10, each framework in a
process of its own. Each --tx_jax_flags value (space-separated --config.x=y overrides) is one
more tx_jax row. The tx_jax processes run with --config.compilation_cache=False, so that their
first step compiles cold like the Flax example's (override it to see a warm start). The batches
are 76.5 % real tokens: tx_jax's default (token_capacity="auto") computes on those alone, in
13/16 of the slots (tx_jax/models/token_layout.py, tx_jax/training/padding_choice.py), and
--tx_jax_flags="--config.token_capacity=1.0" adds a row of its padded step. The peers compute on
the padding too, and the run prints how many FLOPs that is and the share of the ceiling it leaves
the counted work at most. The run ends with each tx_jax row's ratio to each peer and, in float32, its verdict
against issue #14's bars (1.3x the Flax example, 1.0x PyTorch, 60 % of jax's ceiling at the base
shape), e.g. `tx_jax / flax_wmt: 1.35x (bar 1.3x: met)`.

tx_jax's entry points run with a tuned malloc (tx_jax/host_memory.py: one arena that keeps freed
memory), so its worker does by default and the peers run as they do by default; --tuned_malloc=all
gives every system the same allocator (the ratios of the code alone), --tuned_malloc=none none.
tx_jax's worker also freezes what start-up leaves alive out of Python's garbage collector before it
builds and after its first step, as tx_jax.train does (tx_jax/python_gc.py); the peers do not.
"""

import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import issue14_bars  # noqa: E402  (experiments/, beside this script)

_FLAX_WMT_DIR = flags.DEFINE_string("flax_wmt_dir", None, "examples/wmt of the Flax source release.")
_SHAPE = flags.DEFINE_enum("shape", "both", ["small", "base", "both"], "Model shape(s) to measure.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of every system.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per process, after a compiling and a warm-up step.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds; the table has the median over rounds.")
_SYSTEMS = flags.DEFINE_list("systems", ["tx_jax", "flax_wmt", "torch_eager"], "Systems to run.")
_TX_JAX_FLAGS = flags.DEFINE_multi_string("tx_jax_flags", None,
                                          "Extra --config.x=y overrides for a tx_jax row (repeat for more rows).")
_TUNED_MALLOC = flags.DEFINE_enum(
  "tuned_malloc", "tx_jax", ["tx_jax", "all", "none"],
  "Which systems run with the tuned malloc (tx_jax/host_memory.py): tx_jax (as its entry points run it; the "
  "peers as they run by default), all (the same allocator for every system) or none.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one system (or a ceiling) in this process.")
_OVERRIDES = flags.DEFINE_string("overrides", "", "Internal: the tx_jax row's overrides.")

SHAPES = {
  "small": dict(emb_dim=256, num_heads=4, mlp_dim=1024, num_encoder_layers=3, num_decoder_layers=3),
  "base": dict(emb_dim=512, num_heads=8, mlp_dim=2048, num_encoder_layers=6, num_decoder_layers=6),
}
BATCH, LENGTH, VOCAB = 32, 64, 8000
PAD, EOS, BOS = 0, 1, 3  # tx_jax.data.tokenizer's ids
LEARNING_RATE, WARMUP = 0.002, 300  # configs/default.py's
DROPOUT, LABEL_SMOOTHING, SEED = 0.1, 0.1, 0


def make_batches(n: int, seed: int = SEED) -> list:
  """`n` random batches in the translation task's layout; every batch pads the same rows the same way."""
  rng = np.random.default_rng(seed)
  lengths = {k: rng.integers(LENGTH // 2, LENGTH + 1, BATCH) for k in ("inputs", "targets")}  # fixed padding
  batches = []
  for _ in range(n):
    batch = {}
    for key, lens in lengths.items():
      valid = np.arange(LENGTH)[None, :] < lens[:, None]
      ids = np.where(valid, rng.integers(4, VOCAB, (BATCH, LENGTH)), PAD)
      ids[np.arange(BATCH), lens - 1] = EOS
      batch[key] = ids.astype(np.int32)
      batch[f"{key}_segment_ids"] = valid.astype(np.int32)
      batch[f"{key}_positions"] = (np.arange(LENGTH)[None, :] * valid).astype(np.int32)
    shifted = np.concatenate([np.zeros((BATCH, 1), np.int32), batch["targets"][:, :-1]], axis=1)
    # As tx_jax.data.pipeline.with_decoder_inputs: the targets shifted right behind BOS.
    batch["decoder_inputs"] = (np.where(batch["targets_positions"] == 0, BOS, shifted)
                               * batch["targets_segment_ids"]).astype(np.int32)
    batches.append(batch)
  return batches


def peak_rss_mb() -> float:
  """This process's resident-set high-water mark in MB (Linux reports kB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def minor_faults() -> int:
  """This process's minor page faults so far: pages the kernel mapped (and zeroed) on first touch."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_steps(step, batches, after_first_step=None) -> dict:
  """Runs `step(batch) -> loss` over the batches: first and second (warm-up) step's seconds, then the timed ones.

  `after_first_step()`, if given, runs untimed between the first step and the second.

  Also the timed steps' minor page faults per step: a step whose buffers reuse the pages of the step
  before faults none (see tx_jax/host_memory.py), so a slow round with many shows its memory as the cause.
  """
  times, loss, faults = [], None, 0
  for n, batch in enumerate(batches):
    if n == 2:
      faults = minor_faults()
    start = time.perf_counter()
    loss = step(batch)
    times.append(time.perf_counter() - start)
    if n == 0 and after_first_step:
      after_first_step()
  return dict(first_step_s=times[0], second_step_s=times[1], step_seconds=times[2:], loss=loss,
              peak_rss_mb=peak_rss_mb(), faults_per_step=(minor_faults() - faults) / max(1, len(times) - 2))


def tx_jax_overrides(shape: str, dtype: str) -> list:
  """The --config flags that make configs/default.py this benchmark's shape."""
  fields = dict(SHAPES[shape], vocab_size=VOCAB, per_device_batch_size=BATCH, max_target_length=LENGTH,
                dropout_rate=DROPOUT, attention_dropout_rate=DROPOUT, label_smoothing=LABEL_SMOOTHING,
                learning_rate=LEARNING_RATE, warmup_steps=WARMUP, dtype=dtype, compilation_cache=False)
  return [f"--config={os.path.join(ROOT, 'configs', 'default.py')}"] + [f"--config.{k}={v}" for k, v in fields.items()]


def parse_config(argv: list):
  """configs/default.py with `argv`'s --config.x=y overrides, parsed the way tx_jax.train parses them."""
  from ml_collections import config_flags  # noqa: PLC0415
  holder, argv = flags.FlagValues(), ["tx_jax"] + argv
  config = config_flags.DEFINE_config_file("config", None, "Training config.", flag_values=holder, sys_argv=argv)
  holder(argv)
  return config.value


def run_tx_jax(shape: str, dtype: str, overrides: str) -> dict:
  """tx_jax's own model and jit train step (built as tx_jax.train builds them) on this shape."""
  import jax  # noqa: PLC0415
  from tx_jax import configuration, parallel, python_gc, xla_options  # noqa: PLC0415
  from tx_jax.training import experiment  # noqa: PLC0415
  config = parse_config(tx_jax_overrides(shape, dtype) + shlex.split(overrides))
  configuration.validate(config)
  mesh = parallel.make_mesh(config.mesh_shape)
  python_gc.freeze()  # as tx_jax.train does before it builds and after its first step
  _, state, train_fn, _ = experiment.build(config, mesh)

  def step(batch):
    nonlocal state
    state, sums = train_fn(state, parallel.global_batch(batch, mesh))
    jax.block_until_ready((state, sums))
    return float(sums["loss"] / sums["tokens"])

  result = timed_steps(step, make_batches(_STEPS.value + 2), after_first_step=python_gc.freeze)
  return dict(result, compile_options=xla_options.describe(config.parallelism))


def import_flax_train(directory: str):
  """The example's train module, imported from its directory with stand-ins for its data/logging-only imports."""
  if not os.path.isfile(os.path.join(directory, "train.py")):
    raise SystemExit(f"--flax_wmt_dir={directory} holds no train.py: point it at flax-<version>/examples/wmt "
                     "of the unpacked Flax source release (see experiments/flax_wmt_reference.py).")
  # flax.io asks importlib whether tensorflow exists: it must see the truth (no), so it is imported first.
  import flax.training.checkpoints  # noqa: F401, PLC0415
  # train.py imports these at module level for its data pipeline, logging and profiling only
  # (train_and_evaluate); train_step never touches them. tensorflow is not installed, and clu's
  # metric_writers imports tensorflow, so empty modules stand in: any use would raise AttributeError.
  # The one name read at import time is tf.data.Dataset, in two annotations (evaluate, translate_and_...).
  clu = types.ModuleType("clu")
  clu.metric_writers = types.ModuleType("clu.metric_writers")
  clu.periodic_actions = types.ModuleType("clu.periodic_actions")
  tensorflow = types.ModuleType("tensorflow")
  tensorflow.data = types.SimpleNamespace(Dataset="tf.data.Dataset")
  for module in (clu, clu.metric_writers, clu.periodic_actions, tensorflow, types.ModuleType("input_pipeline")):
    sys.modules[module.__name__] = module
  sys.path.insert(0, directory)
  import train  # noqa: PLC0415
  return train


def run_flax_wmt(shape: str, dtype: str) -> dict:
  """The Flax WMT example's models.Transformer and its own train_step, pmapped as its train_and_evaluate does."""
  import functools  # noqa: PLC0415

  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415
  import optax  # noqa: PLC0415
  from flax import jax_utils  # noqa: PLC0415
  from flax import linen as nn  # noqa: PLC0415
  from flax.training import common_utils  # noqa: PLC0415
  train = import_flax_train(_FLAX_WMT_DIR.value)
  s = SHAPES[shape]
  # As train_and_evaluate (train.py), with this benchmark's shape; its config's weight_decay is 0.0.
  train_config = train.models.TransformerConfig(
    vocab_size=VOCAB, output_vocab_size=VOCAB, share_embeddings=True, logits_via_embedding=True,
    dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32, emb_dim=s["emb_dim"], num_heads=s["num_heads"],
    num_layers=s["num_encoder_layers"], qkv_dim=s["emb_dim"], mlp_dim=s["mlp_dim"], max_len=LENGTH,
    dropout_rate=DROPOUT, attention_dropout_rate=DROPOUT, deterministic=False, decode=False,
    kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(stddev=1e-6))
  rng, init_rng = jax.random.split(jax.random.key(SEED))
  m = train.models.Transformer(train_config.replace(deterministic=True))
  variables = jax.jit(m.init)(init_rng, jnp.ones((BATCH, LENGTH), jnp.float32), jnp.ones((BATCH, LENGTH), jnp.float32))
  learning_rate_fn = train.create_learning_rate_schedule(learning_rate=LEARNING_RATE, warmup_steps=WARMUP)
  state = train.TrainState.create(
    apply_fn=m.apply, params=variables["params"], dynamic_scale=None,
    tx=optax.adamw(learning_rate=learning_rate_fn, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.0))
  state = jax_utils.replicate(state)
  p_train_step = jax.pmap(functools.partial(train.train_step, config=train_config, learning_rate_fn=learning_rate_fn,
                                            label_smoothing=LABEL_SMOOTHING),
                          axis_name="batch", donate_argnums=(0,))
  dropout_rngs = jax.random.split(rng, jax.local_device_count())

  def step(batch):
    nonlocal state
    state, metrics = p_train_step(state, common_utils.shard({k: batch[k] for k in ("inputs", "targets")}),
                                  dropout_rng=dropout_rngs)
    jax.block_until_ready((state, metrics))
    return float(metrics["loss"][0] / metrics["denominator"][0])

  return timed_steps(step, make_batches(_STEPS.value + 2))


def run_torch_eager(shape: str, dtype: str) -> dict:
  """A PyTorch nn.Transformer (pre-norm, tied shared embedding, sinusoidal positions) trained eagerly."""
  import contextlib  # noqa: PLC0415

  import torch  # noqa: PLC0415
  from torch import nn  # noqa: PLC0415
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(SEED)
  s = SHAPES[shape]
  d = s["emb_dim"]

  class Seq2Seq(nn.Module):
    """Embedding x sqrt(d) + sinusoids -> dropout -> nn.Transformer -> logits through the same embedding."""

    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(VOCAB, d)
      nn.init.normal_(self.embed.weight, std=d ** -0.5)  # as the JAX models: unit-scale inputs and logits
      self.dropout = nn.Dropout(DROPOUT)
      self.transformer = nn.Transformer(
        d_model=d, nhead=s["num_heads"], num_encoder_layers=s["num_encoder_layers"],
        num_decoder_layers=s["num_decoder_layers"], dim_feedforward=s["mlp_dim"], dropout=DROPOUT,
        activation="relu", batch_first=True, norm_first=True)
      timescales = torch.exp(-math.log(1e4) * torch.arange(d // 2) / (d // 2 - 1))
      angles = torch.arange(LENGTH)[:, None] * timescales[None, :]
      self.register_buffer("positions", torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))
      self.register_buffer("causal", torch.triu(torch.ones(LENGTH, LENGTH, dtype=torch.bool), diagonal=1))

    def forward(self, inputs, decoder_inputs):
      """Logits [batch, target length, vocab]."""
      src = self.dropout(self.embed(inputs) * math.sqrt(d) + self.positions)
      tgt = self.dropout(self.embed(decoder_inputs) * math.sqrt(d) + self.positions)
      out = self.transformer(src, tgt, tgt_mask=self.causal, tgt_is_causal=True,
                             src_key_padding_mask=inputs == PAD, tgt_key_padding_mask=decoder_inputs == PAD,
                             memory_key_padding_mask=inputs == PAD)
      return out @ self.embed.weight.T

  model = Seq2Seq().train()
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.98), eps=1e-9)
  # The JAX systems' schedule: linear warmup from 0, then peak x sqrt(warmup / step).
  scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer, lambda n: min(n / WARMUP, math.sqrt(WARMUP / max(n, WARMUP))))
  criterion = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING, ignore_index=PAD)
  autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bfloat16" else contextlib.nullcontext

  def step(batch):
    inputs, decoder_inputs, targets = (torch.from_numpy(batch[k]).long()
                                       for k in ("inputs", "decoder_inputs", "targets"))
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      logits = model(inputs, decoder_inputs)
    loss = criterion(logits.float().reshape(-1, VOCAB), targets.reshape(-1))
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()

  return timed_steps(step, make_batches(_STEPS.value + 2))


def matmul_ceiling(framework: str, n: int = 2048, reps: int = 10) -> dict:
  """Best float32 [n, n] x [n, n] matmul GFLOP/s of jax (tx_jax's measurement) or torch in this process."""
  if framework == "jax":
    from tx_jax.training import perf  # noqa: PLC0415
    return dict(gflops=perf.measured_matmul_peak(n, reps) / 1e9)
  import torch  # noqa: PLC0415
  torch.set_num_threads(os.cpu_count())
  a = torch.ones(n, n)
  a @ a
  # perf.fastest_seconds's loop, written out: tx_jax.training.perf would import jax into torch's process.
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - start)
  return dict(gflops=2 * n ** 3 / best / 1e9)


def worker(name: str) -> dict:
  """Runs one system (or one framework's matmul ceiling) in this process."""
  shape, dtype = _SHAPE.value, _DTYPE.value
  if name == "tx_jax":
    return run_tx_jax(shape, dtype, _OVERRIDES.value)
  if name == "flax_wmt":
    return run_flax_wmt(shape, dtype)
  if name == "torch_eager":
    return run_torch_eager(shape, dtype)
  return matmul_ceiling(name.removeprefix("ceiling_"))


def spawn(name: str, shape: str = "small", overrides: str = "") -> dict:
  """Runs this script as a worker process; its result dict, or {"error": its last stderr line}."""
  argv = [sys.executable, os.path.abspath(__file__), f"--worker={name}", f"--shape={shape}", f"--dtype={_DTYPE.value}",
          f"--steps={_STEPS.value}", f"--overrides={overrides}"]
  if _FLAX_WMT_DIR.value:
    argv.append(f"--flax_wmt_dir={_FLAX_WMT_DIR.value}")
  from tx_jax import host_memory  # noqa: PLC0415
  tuned = _TUNED_MALLOC.value == "all" or (_TUNED_MALLOC.value == "tx_jax" and name == "tx_jax")
  env = host_memory.environment_for_children() if tuned else host_memory.without_tuned_malloc(os.environ)
  done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
  results = [line[len("RESULT "):] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
  if done.returncode or not results:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return {"error": lines[-1] if lines else f"exit code {done.returncode}"}
  return json.loads(results[-1])


def every_slot_real(batch: dict) -> dict:
  """`batch` with each padding slot made a real token: the work of a step that computes on the padding too."""
  full = dict(batch)
  for key in ("inputs", "targets"):
    full[key] = np.where(batch[key] == PAD, EOS, batch[key]).astype(np.int32)
    full[f"{key}_segment_ids"] = np.ones_like(batch[f"{key}_segment_ids"])
    full[f"{key}_positions"] = np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (BATCH, LENGTH)).copy()
  return full


def train_flops(shape: str) -> tuple:
  """(counted, with padding): tx_jax's analytic training FLOPs of one benchmark batch of `shape`.

  `counted` is the real tokens' (the same count for every system); `with padding` that of the same
  batch with every slot real: what a step that computes the padding does.
  """
  from tx_jax.training import perf  # noqa: PLC0415
  config, batch = parse_config(tx_jax_overrides(shape, _DTYPE.value)), make_batches(1)[0]
  return perf.train_flops(config, batch), perf.train_flops(config, every_slot_real(batch))


def rows_to_run() -> list:
  """(label, system, tx_jax overrides) of every row: one per --tx_jax_flags value, then the peers."""
  rows = []
  for system in _SYSTEMS.value:
    if system == "tx_jax":
      for value in _TX_JAX_FLAGS.value or [""]:
        names = " ".join(f.removeprefix("--config.") for f in shlex.split(value))
        rows.append((f"tx_jax [{names}]" if names else "tx_jax", system, value))
    elif system in ("flax_wmt", "torch_eager"):
      rows.append((system, system, ""))
    else:
      raise app.UsageError(f"--systems: unknown system {system!r}; use tx_jax, flax_wmt, torch_eager.")
  return rows


def main(argv):
  del argv
  if _WORKER.value:
    print("RESULT " + json.dumps(worker(_WORKER.value)), flush=True)
    return
  rows = rows_to_run()
  if "flax_wmt" in _SYSTEMS.value and not _FLAX_WMT_DIR.value:
    raise app.UsageError("--flax_wmt_dir is required for the flax_wmt row (or leave it out of --systems).")
  import importlib.util  # noqa: PLC0415
  has_torch = importlib.util.find_spec("torch") is not None
  shapes = ["small", "base"] if _SHAPE.value == "both" else [_SHAPE.value]
  target_tokens = int(np.count_nonzero(make_batches(1)[0]["targets"]))
  print(f"batch {BATCH} pairs x {LENGTH} tokens (source and target), {target_tokens} of {BATCH * LENGTH} target "
        f"tokens not padding, vocabulary {VOCAB}, {_DTYPE.value}, {_STEPS.value} timed steps, {_ROUNDS.value} "
        f"round(s); tuned malloc for: {_TUNED_MALLOC.value}", flush=True)
  frameworks = ["jax"] + (["torch"] if has_torch and "torch_eager" in _SYSTEMS.value else [])
  ceilings = {f: [] for f in frameworks}
  results = {}  # (label, shape) -> the rounds' result dicts
  for r in range(1, _ROUNDS.value + 1):
    for framework in frameworks:
      ceiling = spawn(f"ceiling_{framework}")
      ceilings[framework].append(ceiling.get("gflops", 0.0))
      print(f"round {r}: {framework} float32 matmul ceiling {ceiling.get('gflops', 0.0):.0f} GFLOP/s "
            f"{ceiling.get('error', '')}", flush=True)
    for shape in shapes:
      for label, system, overrides in rows:
        if system == "torch_eager" and not has_torch:
          continue
        result = spawn(system, shape, overrides)
        results.setdefault((label, shape), []).append(result)
        if "error" in result:
          print(f"round {r}: {shape} {label}: failed: {result['error']}", flush=True)
          continue
        step = statistics.median(result["step_seconds"])
        print(f"round {r}: {shape} {label}: median step {step * 1000:.0f} ms, {target_tokens / step:,.0f} target "
              f"tokens/s, first step {result['first_step_s']:.1f} s, second {result['second_step_s']:.1f} s, loss "
              f"{result['loss']:.3f}, peak RSS {result['peak_rss_mb']:,.0f} MB, "
              f"{result['faults_per_step']:,.0f} page faults a step"
              + (f", compile options {result['compile_options']}" if "compile_options" in result else ""), flush=True)
  peak = {f: max(v) for f, v in ceilings.items()}
  print(f"\nmatmul ceilings (float32, best of {_ROUNDS.value} process(es) x 10 products): "
        + ", ".join(f"{f} {g:.0f} GFLOP/s" for f, g in peak.items()))
  print("\n| system | shape | dtype | target tokens/s | GFLOP/s | % of its matmul ceiling | compile (first step) s "
        "| peak RSS MB |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
  rate, share = {}, {}  # (label, shape) -> target tokens/s, % of its framework's ceiling
  flops_of = {shape: train_flops(shape) for shape in shapes}  # shape -> (counted, with padding)
  for shape in shapes:
    flops = flops_of[shape][0]
    for label, system, _ in rows:
      runs = [x for x in results.get((label, shape), []) if "error" not in x]
      status = "not installed" if system == "torch_eager" and not has_torch else "failed"
      if not runs:
        print(f"| {label} | {shape} | {_DTYPE.value} | {status} | | | | |")
        continue
      step = statistics.median(statistics.median(x["step_seconds"]) for x in runs)
      rate[label, shape] = target_tokens / step
      ceiling = peak["torch" if system == "torch_eager" else "jax"]
      share[label, shape] = 100 * flops / step / 1e9 / ceiling
      print(f"| {label} | {shape} | {_DTYPE.value} | {target_tokens / step:,.0f} | {flops / step / 1e9:.1f} | "
            f"{share[label, shape]:.1f} % | {statistics.median(x['first_step_s'] for x in runs):.1f} | "
            f"{max(x['peak_rss_mb'] for x in runs):,.0f} |")
  bars = _DTYPE.value == "float32"  # the issue's bars are float32 ones; a bfloat16 table gets the ratios alone
  ceiling_bar = issue14_bars.TRAIN_CEILING_BAR
  for shape in shapes:
    print(f"\n{shape}, {_DTYPE.value}, target tokens/s:")
    counted, every_slot = flops_of[shape]
    print(f"(with the padding a step computes {every_slot / 1e9:.1f} GFLOP, {every_slot / counted:.2f}x the "
          f"{counted / 1e9:.1f} counted, so a padded step at its framework's ceiling would show "
          f"{100 * counted / every_slot:.1f} %)")
    for label, system, _ in rows:
      for peer in ("flax_wmt", "torch_eager"):
        if system == "tx_jax" and (label, shape) in rate and (peer, shape) in rate:
          value = rate[label, shape] / rate[peer, shape]
          print(f"{label} / {peer}: {value:.2f}x"
                + (issue14_bars.verdict(value, issue14_bars.TRAIN_RATIO_BARS[peer], "x") if bars else ""))
      if system == "tx_jax" and bars and shape == ceiling_bar["shape"] and (label, shape) in share:
        print(f"{label}: {share[label, shape]:.1f} % of jax's float32 matmul ceiling"
              + issue14_bars.verdict(share[label, shape], ceiling_bar["percent"], " %"))


if __name__ == "__main__":
  app.run(main)
