"""Training throughput versus simulated device count, mesh shape and jit/pmap; memory versus remat policy.

python experiments/scaling.py [--config=configs/default.py] [--global_rows=16] [--steps=8] [--devices=1,2,4,8]

Every row of the tables is one subprocess (the device count is fixed when JAX starts: XLA_FLAGS=
--xla_force_host_platform_device_count=N on CPU) training the same real packed batches from the
config's corpus, so the work per step is identical across rows: a *fixed global batch* of
`global_rows` x max_target_length tokens, split over the devices. Prints two markdown tables.
It simulates devices on the CPU; on an accelerator, time one mesh at a time with
experiments/train_throughput.py --config.mesh_shape=... instead.

Memory per remat policy is reported three ways: the bytes the forward pass keeps for the backward
pass (perf.residual_bytes: what a policy controls, the same on every backend), the compiled
step's temp size (memory_analysis()), and the device's peak bytes in use where the backend
reports memory_stats() (GPU, TPU; not CPU).
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Training config.")
_GLOBAL_ROWS = flags.DEFINE_integer("global_rows", 16, "Rows per global batch (divisible by 8).")
_STEPS = flags.DEFINE_integer("steps", 8, "Timed steps after the compiling one.")
_DEVICES = flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Simulated device counts.")
_POLICIES = flags.DEFINE_list("policies", ["none", "dots_saveable", "dots_with_no_batch_dims_saveable", "full"],
                              "Remat policies to compare (on one device).")
_WAIT = flags.DEFINE_bool("wait_for_idle", True, "Before each job, wait until no other process loads the CPUs.")
_JOB = flags.DEFINE_string("job", None, "Internal: run one measurement (JSON) in this process.")
_BATCHES = flags.DEFINE_string("batches", None, "Internal: the .npz of batches the job trains on.")


def meshes(n: int):
  """(mesh_shape, parallelism) rows measured with n devices."""
  rows = [((n, 1, 1), "jit")]
  if n >= 2:
    rows += [((1, n, 1), "jit")]
  if 2 <= n <= 4:  # tensor parallelism over at most num_heads=4 devices
    rows += [((1, 1, n), "jit")]
  if n >= 4:
    rows += [((2, n // 2, 1), "jit")]
  if n == 8:
    rows += [((2, 2, 2), "jit")]
  return rows + [((n, 1, 1), "pmap")]


def run_job(config, job: dict, batches_path: str) -> dict:
  """Trains the saved batches under `job`'s mesh, parallelism and remat policy; returns the measurements."""
  import jax
  import numpy as np
  from flax import nnx

  from tx_jax import parallel, tasks
  from tx_jax.data import pipeline
  from tx_jax.models import registry
  from tx_jax.training import experiment, perf

  saved = np.load(batches_path)
  count = 1 + max(int(k.split("/")[0]) for k in saved.files)
  batches = [{k.split("/")[1]: saved[k] for k in saved.files if k.startswith(f"{i}/")} for i in range(count)]
  config = config.copy_and_resolve_references()
  config.update(dict(mesh_shape=tuple(job["mesh"]), parallelism=job["parallelism"], remat_policy=job["remat_policy"],
                     per_device_batch_size=max(1, len(batches[0]["targets"]) // jax.device_count())))
  mesh = parallel.make_mesh(config.mesh_shape)
  out = dict(job, devices=jax.device_count())
  _, state, train_fn, _ = experiment.build(config, mesh)
  if job.get("memory"):  # remat rows: what the compiled step and the forward pass hold
    first = parallel.global_batch(batches[0], mesh)
    compiled = train_fn.lower(state, first).compile()
    out["temp_mb"] = compiled.memory_analysis().temp_size_in_bytes / 2 ** 20
    out["xla_gflops"] = compiled.cost_analysis()["flops"] / 1e9
    graphdef, params = nnx.split(nnx.eval_shape(lambda: registry.build_model(config, nnx.Rngs(0))), nnx.Param)
    batch = jax.tree.map(jax.numpy.asarray, batches[0])

    def loss(p):
      return tasks.get(config).metric_sums(nnx.merge(graphdef, p), batch, label_smoothing=config.label_smoothing,
                                           deterministic=False, rng=jax.random.key(0))["loss"]

    out["residual_mb"] = perf.residual_bytes(loss, params) / 2 ** 20
  t = time.perf_counter()
  state, _ = train_fn(state, parallel.global_batch(batches[0], mesh))
  jax.block_until_ready(state)
  out["compile_s"] = time.perf_counter() - t
  times = []  # each step on its own, so that the median shrugs off a moment of foreign load
  for b in batches[1:]:
    t = time.perf_counter()
    state, _ = train_fn(state, parallel.global_batch(b, mesh))
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  step_seconds = float(np.median(times))
  tokens = np.mean([pipeline.count_tokens(b) for b in batches[1:]])
  flops = np.mean([perf.train_flops(config, b) for b in batches[1:]])
  out.update(step_ms=1000 * step_seconds, tokens_per_sec=tokens / step_seconds, flops_per_sec=flops / step_seconds)
  stats = jax.local_devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    out["peak_mb"] = stats["peak_bytes_in_use"] / 2 ** 20
  return out


def _busy_fraction(seconds: float = 2.0) -> float:
  """Fraction of the machine's CPU time spent busy over the next `seconds` (Linux /proc/stat; else 0)."""
  def read():
    with open("/proc/stat") as f:
      fields = [int(v) for v in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait, total
  if not os.path.exists("/proc/stat"):
    return 0.0
  idle0, total0 = read()
  time.sleep(seconds)
  idle1, total1 = read()
  return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def _wait_for_idle(pattern: str = "tx_jax.train|tx_jax.evaluate|pytest", max_busy: float = 0.15):
  """Waits while other processes (training, tests, anything using > max_busy of the CPUs) would skew timings."""
  while True:
    named = subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False).returncode == 0
    busy = _busy_fraction()
    if not named and busy <= max_busy:
      return
    print(f"  (waiting: {'a process matches ' + repr(pattern) if named else f'CPUs {100 * busy:.0f} % busy'})",
          file=sys.stderr, flush=True)
    time.sleep(20)


def _spawn(job: dict, batches_path: str) -> dict:
  """Runs one job in a fresh process with job["devices"] simulated devices."""
  if _WAIT.value:
    _wait_for_idle()
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={job['devices']}")
  args = [sys.executable, os.path.abspath(__file__), f"--batches={batches_path}", f"--job={json.dumps(job)}"]
  args += [a for a in sys.argv[1:] if a.startswith("--config")]
  out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
  if out.returncode:
    raise RuntimeError(f"job {job} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def _save_batches(config, path: str):
  """Packs 1 + steps global batches of the config's training data into an .npz."""
  import numpy as np

  from tx_jax import tasks
  task = tasks.get(config)
  it = task.train_batches(config, task.tokenizer(config, train=True), global_rows=_GLOBAL_ROWS.value)
  np.savez(path, **{f"{i}/{k}": v for i in range(1 + _STEPS.value) for k, v in next(it).items()})


def main(argv):
  del argv
  config = _CONFIG.value
  if _JOB.value:
    print(json.dumps(run_job(config, json.loads(_JOB.value), _BATCHES.value)))
    return
  from tx_jax.training import perf
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "batches.npz")
    _save_batches(config, path)
    if _WAIT.value:
      _wait_for_idle()
    peak = perf.measured_matmul_peak()  # the whole machine: simulated CPU devices share its cores
    print(f"config {_CONFIG.value.emb_dim}d {config.num_encoder_layers}+{config.num_decoder_layers} layers, "
          f"global batch {_GLOBAL_ROWS.value} x {config.max_target_length}, median of {_STEPS.value} timed steps; "
          f"MFU against the measured float32 matmul peak of the machine, {peak / 1e12:.3f} TFLOP/s\n")
    print("| devices | mesh (data, fsdp, tensor) | parallelism | step (ms) | tokens/s | tokens/s/device | MFU "
          "| compile (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in map(int, _DEVICES.value):
      for mesh, parallelism in meshes(n):
        r = _spawn(dict(devices=n, mesh=mesh, parallelism=parallelism, remat_policy="none"), path)
        print(f"| {n} | {tuple(mesh)} | {parallelism} | {r['step_ms']:.0f} | {r['tokens_per_sec']:,.0f} | "
              f"{r['tokens_per_sec'] / n:,.0f} | {100 * r['flops_per_sec'] / peak:.1f} % | {r['compile_s']:.1f} |",
              flush=True)
    print("\n| remat_policy | saved for backward (MB) | compiled temp (MB) | XLA GFLOP/step | step (ms) | tokens/s "
          "| peak in use (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for policy in _POLICIES.value:
      r = _spawn(dict(devices=1, mesh=(1, 1, 1), parallelism="jit", remat_policy=policy, memory=True), path)
      peak = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "n/a (CPU)"
      print(f"| {policy} | {r['residual_mb']:.1f} | {r['temp_mb']:.1f} | {r['xla_gflops']:.1f} | {r['step_ms']:.0f} | "
            f"{r['tokens_per_sec']:,.0f} | {peak} |", flush=True)


if __name__ == "__main__":
  app.run(main)
