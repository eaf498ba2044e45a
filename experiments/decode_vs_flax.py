"""Decoding side by side: tx_jax's decoder against the Flax WMT example's, interleaved rounds, with ratios.

python experiments/decode_vs_flax.py --flax_wmt_dir=DIR [--rounds=3] [--shapes=small,base] [--repeats=5]
    [--dtype=float32|bfloat16]

DIR is `examples/wmt` of the Flax source release (experiments/flax_wmt_reference.py gives the two
commands that fetch it). Each round runs experiments/flax_wmt_reference.py, then
experiments/decode_throughput.py --without_cache=false, each in a fresh process with the same
shapes, batch, sources, output length, timed calls and dtype, and reads the output tokens/s they
print. The table has each system's median over the rounds; the last lines give one ratio of the
medians per shape and search, in the form `small greedy: tx_jax / flax_wmt: 1.79x`, beside the
bars of issue #14 (greedy >= 2x, beam 4 >= 2.5x). On a shared 2-core machine the Flax example's own
rate moves 15-25 % between rounds (experiments/README.md), so read the medians of a few rounds; the
per-round ratios are printed as they come.
"""

import os
import re
import statistics
import subprocess
import sys

from absl import app, flags

import issue14_bars  # experiments/, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEMS = {"flax_wmt": "flax_wmt_reference.py", "tx_jax": "decode_throughput.py"}  # run in this order
SEARCHES = ("greedy", "beam 4")

_FLAX_WMT_DIR = flags.DEFINE_string("flax_wmt_dir", None, "examples/wmt of the Flax source release.", required=True)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds; the table has the median over rounds.")
_SHAPES = flags.DEFINE_list("shapes", ["small", "base"], "Model shapes to measure (decode_throughput.py's).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per search in each process (the best is reported).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype of both decoders (decode_throughput.py's --dtype).")

flags.register_validator("shapes", lambda shapes: set(shapes) <= {"small", "base"},
                         "--shapes takes small and/or base (decode_throughput.py's SHAPES).")

_SHAPE_LINE = re.compile(r"^(\w+) \(d \d+, ")
_RATE_LINE = re.compile(r"^\s+(greedy|beam 4)\s+(\d+) output tokens/s")


def parse_rates(stdout: str) -> dict:
  """{(shape, search): output tokens/s} from decode_throughput.py's or flax_wmt_reference.py's printout."""
  rates, shape = {}, None
  for line in stdout.splitlines():
    if match := _SHAPE_LINE.match(line):
      shape = match.group(1)
    elif (match := _RATE_LINE.match(line)) and shape is not None:
      rates[(shape, match.group(1))] = float(match.group(2))
  return rates


def run_system(system: str) -> dict:
  """One process of `system` over every shape: its rates, or exit with the child's last error line."""
  argv = [sys.executable, os.path.join(HERE, SYSTEMS[system]), f"--shapes={','.join(_SHAPES.value)}",
          f"--repeats={_REPEATS.value}", f"--dtype={_DTYPE.value}"]
  argv += [f"--flax_wmt_dir={_FLAX_WMT_DIR.value}"] if system == "flax_wmt" else ["--without_cache=false"]
  done = subprocess.run(argv, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["(no error output)"]
    sys.exit(f"{SYSTEMS[system]} failed (exit code {done.returncode}): {last[0]}")
  rates = parse_rates(done.stdout)
  if missing := [key for key in expected_keys() if key not in rates]:
    sys.exit(f"{SYSTEMS[system]} printed no output tokens/s for {missing}")
  return rates


def expected_keys() -> list:
  """The (shape, search) pairs every process must report."""
  return [(shape, search) for shape in _SHAPES.value for search in SEARCHES]


def ratio(rates: dict, key: tuple) -> float:
  """tx_jax's output tokens/s over the Flax example's for `key` (shape, search); rates: {system: {key: rate}}."""
  return rates["tx_jax"][key] / rates["flax_wmt"][key]


def ratio_line(rates: dict, key: tuple) -> str:
  """`small greedy: tx_jax / flax_wmt: 1.79x (bar 2.0x: met)`."""
  shape, search = key
  value = ratio(rates, key)
  return (f"{shape} {search}: tx_jax / flax_wmt: {value:.2f}x"
          + issue14_bars.verdict(value, issue14_bars.DECODE_BARS[search], "x"))


def main(argv):
  del argv
  per_round = []
  for n in range(1, _ROUNDS.value + 1):
    rates = {system: run_system(system) for system in SYSTEMS}
    per_round.append(rates)
    cells = [f"{shape} {search} {rates['tx_jax'][(shape, search)]:,.0f} / {rates['flax_wmt'][(shape, search)]:,.0f} "
             f"({ratio(rates, (shape, search)):.2f}x)" for shape, search in expected_keys()]
    print(f"round {n} (tx_jax / flax_wmt output tokens/s): " + ", ".join(cells), flush=True)

  median = {system: {key: statistics.median(r[system][key] for r in per_round) for key in expected_keys()}
            for system in SYSTEMS}
  print(f"\n{_DTYPE.value}, median of {_ROUNDS.value} round(s), output tokens/s "
        f"(decode_throughput.py's batch, sources and lengths):\n")
  print("| shape | search | tx_jax | flax_wmt | ratio | per round |")
  print("| --- | --- | --- | --- | --- | --- |")
  for shape, search in expected_keys():
    key = (shape, search)
    rounds = " / ".join(f"{ratio(r, key):.2f}x" for r in per_round)
    print(f"| {shape} | {search} | {median['tx_jax'][key]:,.0f} | {median['flax_wmt'][key]:,.0f} | "
          f"{ratio(median, key):.2f}x | {rounds} |")
  print()
  for key in expected_keys():
    print(ratio_line(median, key))


if __name__ == "__main__":
  app.run(main)
