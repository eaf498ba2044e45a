"""Compare translation systems with significance: python -m tx_jax.compare --references=REF --system=A --system=B

Scores every system with SacreBLEU's BLEU, chrF and TER and runs SacreBLEU's paired test of each against
the first system (the baseline): paired bootstrap resampling (--method=bs) or approximate randomization
(--method=ar), with --n resamples/trials and --seed. Files hold one sentence per line (UTF-8).
--system and --references may be repeated or given as comma-separated lists (several references).
"""

import logging
import os
import sys

from absl import app, flags

from tx_jax import command_line, errors
from tx_jax.inference import scores

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags (defined on demand, so the module also imports as a library)."""
  flags.DEFINE_multi_string("references", None, "Reference file(s), one sentence per line; repeat or "
                            "comma-separate for several references.")
  flags.DEFINE_multi_string("system", None, "System output file(s), one sentence per line; repeat or "
                            "comma-separate. The first is the baseline.")
  flags.DEFINE_enum("method", "bs", ["bs", "ar"], "Paired bootstrap resampling (bs) or approximate "
                    "randomization (ar).")
  flags.DEFINE_integer("n", 1000, "Bootstrap resamples (bs) or randomization trials (ar); also the "
                       "resamples for the confidence intervals.")
  flags.DEFINE_integer("seed", 12345, "Random seed (passed to SacreBLEU as SACREBLEU_SEED).")


def read_lines(path, flag):
  """The lines of a UTF-8 text file (undecodable bytes replaced), without line endings."""
  try:
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
      lines = [line[:-1] if line.endswith("\n") else line for line in f]
  except OSError as e:
    raise errors.DataError(f"cannot read --{flag}={path} ({e.strerror or e}); pass an existing text file "
                           "with one sentence per line.") from e
  lines = [line[:-1] if line.endswith("\r") else line for line in lines]
  if not lines:
    raise errors.DataError(f"--{flag}={path} is empty; pass a file with one sentence per line.")
  return lines


def system_names(paths):
  """Short unique names for system files: the base name, or the path when base names collide."""
  bases = [os.path.basename(p) or p for p in paths]
  names = [b if bases.count(b) == 1 else p for b, p in zip(bases, paths)]
  seen = {}
  out = []
  for name in names:
    seen[name] = seen.get(name, 0) + 1
    out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
  return out


def load_inputs(reference_paths, system_paths):
  """(reference streams, {name: hypotheses} with the baseline first) read from files and checked."""
  if not reference_paths:
    raise errors.ConfigError("no --references given; pass --references=FILE (one sentence per line).")
  if len(system_paths) < 2:
    raise errors.ConfigError(f"{len(system_paths)} --system file(s) given; pass at least two "
                             "(--system=A.txt --system=B.txt), the first being the baseline.")
  streams = [read_lines(p, "references") for p in reference_paths]
  n_lines = len(streams[0])
  for path, stream in zip(reference_paths, streams):
    if len(stream) != n_lines:
      raise errors.DataError(f"--references={path} has {len(stream)} lines but --references="
                             f"{reference_paths[0]} has {n_lines}; give references of the same test set.")
  systems = {}
  for path, name in zip(system_paths, system_names(system_paths)):
    hyps = read_lines(path, "system")
    if len(hyps) != n_lines:
      raise errors.DataError(f"--system={path} has {len(hyps)} lines but the references have {n_lines}; "
                             "give one output line per reference line, in the same order.")
    systems[name] = hyps
  return streams, systems


def compare(reference_paths, system_paths, *, method="bs", n=1000, seed=12345):
  """The report text (table, significance lines, signatures) for system files against reference files."""
  streams, systems = load_inputs(reference_paths, system_paths)
  baseline = next(iter(systems))
  rows = scores.paired_significance(streams, systems, baseline=baseline, method=method, n=n, seed=seed)
  test = "paired bootstrap resampling" if method == "bs" else "approximate randomization"
  lines = [f"{len(systems)} systems, {len(streams[0])} sentences, {len(streams)} reference(s); "
           f"SacreBLEU {test} (n={n}, seed={seed}); baseline: {baseline}", "",
           scores.format_table(rows), "",
           f"Against the baseline (significant: p < {scores.ALPHA} and a non-zero difference):",
           scores.significance_summary(rows), "", "Signatures:"]
  lines += [f"  {r['metric']}: {r['signature']}" for r in rows if r["baseline"]]
  return "\n".join(lines)


def main(argv):
  """Reads the files named by the flags, prints the comparison, or one line naming a user mistake."""
  if len(argv) > 1:
    sys.exit(f"tx_jax.compare: unexpected arguments {argv[1:]}; pass files with --references= and --system=.")
  logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # its per-metric INFO progress lines
  with command_line.one_line_errors("tx_jax.compare"):
    report = compare(command_line.split_list(FLAGS.references), command_line.split_list(FLAGS.system),
                     method=FLAGS.method, n=FLAGS.n, seed=FLAGS.seed)
  print(report)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=command_line.flags_parser("tx_jax.compare"))
