"""Test BLEU of a run's final checkpoint beside its checkpoint average, its EMA and a two-run ensemble (issue #12).

  python experiments/translation_toolkit.py --run=W1 --second_run=W2 [--average_last=5] [--split=test]

W1 is a `configs/default.py` run trained with --config.ema_decay=0.999
--config.checkpoint_every_steps=100 --config.max_checkpoints_to_keep=5 (so its last 5 checkpoints
are 100 steps apart); W2 is another run of the same config with another seed. Every system decodes
the whole split with the run's beam settings, and SacreBLEU's paired bootstrap (1000 resamples,
seeded) tests each against the final checkpoint's raw parameters. Prints one table and the verdicts.
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run", required=True, help="a run with an EMA and checkpoints 100 steps apart")
  parser.add_argument("--second_run", required=True, help="the same config with another seed (the ensemble's 2nd)")
  parser.add_argument("--average_last", type=int, default=5)
  parser.add_argument("--split", default="test")
  args = parser.parse_args()
  from tx_jax import evaluate, tasks
  from tx_jax.inference import scores
  from tx_jax.training import experiment

  config = experiment.workdir_config(args.run)
  systems, summaries = {}, {}

  def read(path):
    with open(path, encoding="utf-8") as f:
      return f.read().split("\n")[:-1]

  runs = {
    "final checkpoint": lambda: evaluate.evaluate(config, args.run, split=args.split, use_ema=False),
    f"average of last {args.average_last}": lambda: evaluate.evaluate(config, args.run, split=args.split,
                                                                      average_last=args.average_last),
    "EMA (decay %g)" % config.ema_decay: lambda: evaluate.evaluate(config, args.run, split=args.split),
    "ensemble of 2 seeds": lambda: evaluate.evaluate_ensemble(config, [args.run, args.second_run], split=args.split,
                                                             use_ema=False),
  }
  for name, run in runs.items():
    summaries[name] = run()
    systems[name] = read(summaries[name]["translations"])
    print(f"{name}: BLEU {summaries[name]['bleu']:.2f}", flush=True)
  references = [p[1] for p in tasks.get(config).pairs(config, args.split)]
  rows = scores.paired_significance(references, systems, baseline="final checkpoint")
  print(f"\n{len(references)} {args.split} sentences; paired bootstrap against the final checkpoint\n")
  print("| system | BLEU (95 % CI) | chrF | TER | BLEU delta | p (BLEU) | verdict |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  by = {(r["system"], r["metric"]): r for r in rows}
  for name in systems:
    b, c, t = by[name, "BLEU"], by[name, "chrF"], by[name, "TER"]
    verdict = "baseline" if b["baseline"] else (
      ("significantly " + ("better" if b["delta"] > 0 else "worse")) if b["significant"] else "not significant")
    p = "-" if b["p_value"] is None else f"{b['p_value']:.4f}"
    print(f"| {name} | {b['score']:.2f} (+- {b['ci']:.2f}) | {c['score']:.2f} | {t['score']:.2f} | "
          f"{b['delta']:+.2f} | {p} | {verdict} |")
  print("\n" + scores.significance_summary(rows))
  print(f"\nsignature: {by['final checkpoint', 'BLEU']['signature']}")


if __name__ == "__main__":
  main()
