"""Start-up of a training run, cold and warm: process start to the first training step done.

  python experiments/first_step_time.py --config=configs/default.py --rounds=3

Each round runs `python -m tx_jax.train` twice in a fresh workdir: cold (an empty compilation
cache, $JAX_COMPILATION_CACHE_DIR) then warm (the cache the cold run just filled). The figure is
the wall time from starting the process until train.py logs "First step took"
(the first step done, its result on the host), beside the first step's own seconds from that line;
the process is then killed. Corpus and vocabulary come from the data cache, as in any second run.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_CONFIG = flags.DEFINE_string("config", "configs/default.py", "Training config file.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Cold/warm pairs, alternating.")
_EXTRA = flags.DEFINE_multi_string("train_flag", [], "More flags for tx_jax.train, e.g. --config.dtype=bfloat16.")
_LOG = flags.DEFINE_string("log", "", "Directory to keep each run's log in (default: none kept).")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FIRST_STEP = re.compile(r"First step took ([0-9.]+)s")


def run_once(cache_dir: str, workdir: str, log_path: str | None) -> tuple[float, float]:
  """(seconds from process start to the first step done, the first step's own seconds) of one training run."""
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir)
  command = [sys.executable, "-m", "tx_jax.train", f"--config={_CONFIG.value}", f"--workdir={workdir}",
             *_EXTRA.value]
  start = time.perf_counter()
  proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  lines = []
  try:
    for line in proc.stderr:
      lines.append(line)
      match = _FIRST_STEP.search(line)
      if match:
        return time.perf_counter() - start, float(match.group(1))
    raise RuntimeError("the run ended before its first step:\n" + "".join(lines[-30:]))
  finally:
    proc.kill()
    proc.wait()
    if log_path:
      with open(log_path, "w") as f:
        f.writelines(lines)


def main(argv):
  del argv
  results = {"cold": [], "warm": []}
  root = tempfile.mkdtemp(prefix="first_step_time_")
  if _LOG.value:
    os.makedirs(_LOG.value, exist_ok=True)
  try:
    for r in range(_ROUNDS.value):
      cache = os.path.join(root, f"cache{r}")
      for kind in ("cold", "warm"):
        log = os.path.join(_LOG.value, f"{kind}{r}.log") if _LOG.value else None
        total, first = run_once(cache, os.path.join(root, f"{kind}{r}"), log)
        results[kind].append((total, first))
        print(f"round {r} {kind}: first step done {total:.2f} s after process start (the step itself {first:.2f} s)",
              flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  cold, warm = (statistics.median(t for t, _ in results[k]) for k in ("cold", "warm"))
  print(f"median: cold {cold:.2f} s, warm {warm:.2f} s; cold / warm: {cold / warm:.2f}x")


if __name__ == "__main__":
  app.run(main)
