"""Time to the first training step and peak memory against corpus size, for the Grain pipeline and the old one.

The corpora are the LibreOffice help training pairs repeated with distinct suffixes (" #k" on
both sides, so no two pairs are equal), about 35k, 350k and 3.5M pairs, with the real
validation and test splits. The vocabulary is cached (the demo's), so what grows is reading,
tokenizing and packing. Each run is `python -m tx_jax.train --config=configs/default.py` with
the corpus as `text_files`, measured from process start to the log line of the first step.

  python experiments/data_scaling.py [--old=DIR] [--sizes=35000,350000,3500000] [--steps=150]
        [--grain_flags=--config.data_workers=0 ...] [--rounds=3]

--old points at a checkout of the pipeline before Grain (e.g. `git worktree add /tmp/old 93e9472`);
without it only the new pipeline runs (--new: another checkout of it, e.g. a worktree of HEAD). The one-time preparation of a corpus (ArrayRecord shards)
is timed separately, before its run.
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def build_corpus(out_dir: str, pairs_by_split: dict, size: int):
  """Writes `size` train pairs (the real ones repeated with distinct suffixes) and the real eval splits."""
  if os.path.exists(os.path.join(out_dir, "test.en")):
    return
  from tx_jax.data import text_files
  os.makedirs(out_dir, exist_ok=True)
  train = pairs_by_split["train"]
  with open(os.path.join(out_dir, "train.de"), "w") as de, open(os.path.join(out_dir, "train.en"), "w") as en:
    for i in range(size):
      e, d = train[i % len(train)]
      k = i // len(train)
      de.write(f"{d} #{k}\n" if k else d + "\n")
      en.write(f"{e} #{k}\n" if k else e + "\n")
  text_files.write_text_files(out_dir, {s: [(d, e) for e, d in pairs_by_split[s]] for s in ("validation", "test")},
                              "de", "en")


def _tree_rss(pid: int) -> int:
  """Resident bytes of a process and its descendants (Grain workers), from /proc."""
  total, todo = 0, [pid]
  while todo:
    p = todo.pop()
    try:
      with open(f"/proc/{p}/status") as f:
        total += next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
      with open(f"/proc/{p}/task/{p}/children") as f:
        todo += [int(c) for c in f.read().split()]
    except (OSError, StopIteration):
      pass
  return total


def run_training(checkout: str, corpus: str, vocab: str, workdir: str, steps: int, cache: str, extra=()) -> dict:
  """One training run: seconds to the first step, peak RSS (process tree), steady tokens/s and step stats."""
  args = [sys.executable, "-m", "tx_jax.train", "--config=configs/default.py", f"--workdir={workdir}",
          "--config.dataset=text_files", f"--config.data_dir={corpus}", f"--config.vocab_path={vocab}",
          f"--config.data_cache_dir={cache}", f"--config.num_train_steps={steps}", "--config.log_every_steps=50",
          f"--config.eval_every_steps={steps * 10}", f"--config.checkpoint_every_steps={steps * 10}", *extra]
  env = dict(os.environ, PYTHONPATH=checkout)
  start = time.time()
  proc = subprocess.Popen(args, cwd=checkout, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  peak, first, lines = [0], [None], []

  def sample():
    while proc.poll() is None:
      peak[0] = max(peak[0], _tree_rss(proc.pid))
      time.sleep(0.25)
  threading.Thread(target=sample, daemon=True).start()
  for line in proc.stderr:
    lines.append(line)
    if first[0] is None and "First step took" in line:
      first[0] = time.time() - start
  proc.wait()
  if proc.returncode:
    raise SystemExit("".join(lines[-20:]))
  rates = [float(m.group(1)) for l in lines if (m := re.search(r"  (\d+) tokens/s", l))]
  waits = [float(m.group(1)) for l in lines if (m := re.search(r"data wait ([\d.]+) ms/step", l))]
  steps_ms = [(float(m.group(1)), float(m.group(2))) for l in lines
              if (m := re.search(r"step median ([\d.]+) ms, max ([\d.]+) ms", l))]
  return {"first_step_s": first[0], "peak_rss_gb": peak[0] / 2 ** 30,
          "tokens_per_s": float(np.median(rates[1:] or rates)), "data_wait_ms": waits, "step_ms": steps_ms}


def prepare(corpus: str, vocab: str, cache: str) -> float:
  """Seconds to convert a corpus into ArrayRecord shards (the new pipeline's one-time preparation)."""
  from configs import default
  from tx_jax import tasks
  config = default.get_config()
  config.update(dataset="text_files", data_dir=corpus, vocab_path=vocab, data_cache_dir=cache)
  start = time.time()
  for split in ("train", "validation"):
    tasks.get(config).records(config, split)
  return time.time() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--old", default="", help="a checkout of the pre-Grain pipeline (git worktree)")
  parser.add_argument("--new", default=REPO, help="the checkout whose Grain pipeline runs (default: this one)")
  parser.add_argument("--sizes", default="35000,350000,3500000")
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--scratch", default="/tmp/tx_jax_data_scaling")
  parser.add_argument("--grain_flags", action="append", default=[],
                      help="extra flags of a Grain variant, e.g. --config.data_workers=0 (repeat for several variants)")
  parser.add_argument("--rounds", type=int, default=1,
                      help="runs of every variant per size, interleaved (ABAB...), so noise hits all alike")
  args = parser.parse_args()
  from configs import default
  from tx_jax.data import libreoffice
  config = default.get_config()
  cache = os.path.expanduser(config.data_cache_dir)
  pairs = libreoffice.load_libreoffice_help(cache, language="de")
  vocab = os.path.join(cache, "vocab", "libreoffice_help_de-en_8000.model")  # the demo's, trained if missing
  if not os.path.exists(vocab):
    from tx_jax import tasks
    tasks.get(config).tokenizer(config, train=True)
  variants = [(f"grain {f}".strip(), args.new, f.split()) for f in (args.grain_flags or [""])]
  if args.old:
    variants.append(("old", args.old, []))
  rows = []
  for size in map(int, args.sizes.split(",")):
    corpus = os.path.join(args.scratch, f"corpus_{size}")
    build_corpus(corpus, pairs, size)
    record_cache = os.path.join(args.scratch, f"cache_{size}")
    prep = prepare(corpus, vocab, record_cache)
    for r_index in range(args.rounds):
      order = variants if r_index % 2 == 0 else variants[::-1]
      for name, checkout, extra in order:
        r = run_training(checkout, corpus, vocab, os.path.join(args.scratch, f"run_{size}_{time.time():.0f}"),
                         args.steps, record_cache, extra)
        rows.append((size, name, r))
        print(f"{size:>9,} {name:30} first step {r['first_step_s']:6.1f} s  peak RSS {r['peak_rss_gb']:5.2f} GB  "
              f"{r['tokens_per_s']:7.0f} tokens/s  data wait ms/step {r['data_wait_ms']}  step median/max ms "
              f"{r['step_ms']}", flush=True)
  print(f"\none-time preparation (ArrayRecord shards) s: {prep:.1f} at the last size\n")
  print("| pairs | pipeline | runs | start to first step s | peak RSS GB | tokens/s (median of runs) |")
  print("| --- | --- | --- | --- | --- | --- |")
  medians = {}
  for size in dict.fromkeys(s for s, _, _ in rows):
    for name, _, _ in variants:
      runs = [r for s, n, r in rows if s == size and n == name]
      med = {k: float(np.median([r[k] for r in runs])) for k in ("first_step_s", "peak_rss_gb", "tokens_per_s")}
      medians[size, name] = med
      print(f"| {size:,} | {name} | {len(runs)} | {med['first_step_s']:.1f} | {med['peak_rss_gb']:.2f} | "
            f"{med['tokens_per_s']:,.0f} |")
  if args.old:
    for (size, name), med in medians.items():
      if name != "old":
        print(f"{size:,} pairs tokens/s {name} / old: {med['tokens_per_s'] / medians[size, 'old']['tokens_per_s']:.3f}x")


if __name__ == "__main__":
  main()
