"""Corpus BLEU, chrF and TER with confidence intervals and paired significance tests, all by SacreBLEU.

Every number here comes from SacreBLEU's own code: the metric objects (`sacrebleu.metrics.BLEU`, `CHRF`,
`TER`), their bootstrap confidence estimate (`Metric.corpus_score(..., n_bootstrap=N)`, which SacreBLEU's
`--confidence` flag uses) and `sacrebleu.significance.PairedTest` (paired bootstrap resampling `bs`, as in
Moses, or approximate randomization `ar`, as in MultEval). Nothing is re-implemented.

SacreBLEU 2.x takes its random seed only from the SACREBLEU_SEED environment variable (default 12345),
read when the bootstrap runs and when a PairedTest is built; these functions set it for the duration of the
call and restore it afterwards (so they are not safe to run from several threads at once).
"""

import contextlib
import os

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.significance import PairedTest

from tx_jax import errors

METRICS = ("BLEU", "chrF", "TER")  # the names used as keys and in rows, whatever SacreBLEU calls them
HIGHER_IS_BETTER = {"BLEU": True, "chrF": True, "TER": False}
ALPHA = 0.05  # a difference is called significant when p < ALPHA
_SEED_ENV = "SACREBLEU_SEED"


class _FloatScores:
  """A SacreBLEU metric whose scores are Python floats.

  SacreBLEU 2.6 bootstraps over float32 statistics, so a resample's score is a numpy float32, except
  where BLEU returns a literal 0.0 (a resample without one matching 4-gram, common on small test sets);
  its `statistics.mean` over that mix raises "don't know how to coerce float and float32". SacreBLEU's
  own computation is kept; only the type of its result changes.
  """

  def _compute_score_from_stats(self, stats):
    score = super()._compute_score_from_stats(stats)
    score.score = float(score.score)
    return score


class _BLEU(_FloatScores, BLEU):
  pass


class _CHRF(_FloatScores, CHRF):
  pass


class _TER(_FloatScores, TER):
  pass


def _new_metrics():
  """Fresh SacreBLEU metric objects with default settings, keyed by our metric names (objects keep state)."""
  return {"BLEU": _BLEU(), "chrF": _CHRF(), "TER": _TER()}


@contextlib.contextmanager
def _sacrebleu_seed(seed):
  """Sets SACREBLEU_SEED (the only seed SacreBLEU's bootstrap and paired tests read) for a `with` block."""
  if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 1):
    # PairedTest treats seed 0 as "no seed" (`seed if seed else None`), and numpy rejects negative seeds.
    raise errors.ConfigError(f"seed={seed!r} is not usable; pass a positive integer such as 12345.")
  old = os.environ.get(_SEED_ENV)
  os.environ[_SEED_ENV] = "none" if seed is None else str(seed)
  try:
    yield
  finally:
    if old is None:
      os.environ.pop(_SEED_ENV, None)
    else:
      os.environ[_SEED_ENV] = old


def _check_samples(n, what):
  """Raises ConfigError unless `n` is an integer >= 2 (SacreBLEU needs several resamples for a CI)."""
  if isinstance(n, bool) or not isinstance(n, int) or n < 2:
    raise errors.ConfigError(f"{what}={n!r} is too small; pass an integer >= 2 (1000 is usual).")


def reference_streams(references, n_lines=None):
  """`references` as SacreBLEU's list of reference streams (one list of strings per reference), checked."""
  if isinstance(references, str) or not references:
    raise errors.DataError("references are empty or a single string; pass a list of reference sentences "
                           "(or a list of such lists for several references).")
  if isinstance(references[0], str):
    streams = [list(references)]
  else:
    streams = [list(s) for s in references]
  for i, stream in enumerate(streams):
    if isinstance(stream, str) or not all(r is None or isinstance(r, str) for r in stream):
      raise errors.DataError(f"reference stream {i} is not a list of strings; pass a list of reference "
                             "sentences (or a list of such lists for several references).")
    want = len(streams[0]) if n_lines is None else n_lines
    if len(stream) != want:
      # SacreBLEU zips hypotheses with references, so a length mismatch would silently truncate.
      raise errors.DataError(f"reference stream {i} has {len(stream)} sentences but {want} are needed; give "
                             "one reference per hypothesis, in the same order.")
  return streams


def _hypotheses(hypotheses, name="hypotheses"):
  """`hypotheses` as a non-empty list of strings, else DataError."""
  if isinstance(hypotheses, str) or not hypotheses:
    raise errors.DataError(f"{name} are empty or a single string; pass a list of sentences.")
  hypotheses = list(hypotheses)
  if not all(isinstance(h, str) for h in hypotheses):
    raise errors.DataError(f"{name} contain non-strings; pass a list of sentences.")
  return hypotheses


def corpus_scores(hypotheses, references, *, confidence=True, seed=12345, n_bootstrap=1000) -> dict:
  """SacreBLEU BLEU, chrF and TER of one system: {metric: {score, signature, ci95, mean, details, name}}."""
  hypotheses = _hypotheses(hypotheses)
  streams = reference_streams(references, len(hypotheses))
  if confidence:
    _check_samples(n_bootstrap, "n_bootstrap")
  out = {}
  with _sacrebleu_seed(seed):
    for key, metric in _new_metrics().items():
      score = metric.corpus_score(hypotheses, streams, n_bootstrap=n_bootstrap if confidence else 1)
      signature = str(metric.get_signature())
      out[key] = {
        "name": score.name,  # SacreBLEU's own name, e.g. chrF2
        "score": float(score.score),
        "signature": signature,
        # SacreBLEU reports the 95% CI as "mu = mean +- ci": ci is the half-width of the percentile interval.
        "ci95": float(score._ci) if confidence else None,
        "mean": float(score._mean) if confidence else None,
        "details": score.format(signature=signature),
      }
      if key == "BLEU":  # hypothesis / reference length, the figure a length penalty is tuned by
        out[key]["length_ratio"] = float(score.sys_len / max(score.ref_len, 1))
  return out


def paired_significance(references, systems, *, baseline, method="bs", n=1000, seed=12345) -> list:
  """Rows of SacreBLEU's paired test (bs or ar) of every system against `baseline`, for BLEU, chrF and TER.

  Each row: system, metric, score, delta (score - baseline score), mean and ci (95% bootstrap half-width),
  p_value (None for the baseline), significant (p < 0.05 and a non-zero difference), baseline (bool),
  higher_is_better, signature. SacreBLEU (like MultEval) counts only resampled differences strictly greater
  than the observed one, so a zero difference gets the smallest p, 1/(n+1); that is why a difference of
  exactly zero (e.g. identical hypotheses) is never called significant here.
  """
  if method not in ("bs", "ar"):
    raise errors.ConfigError(f"method={method!r} is unknown; use 'bs' (paired bootstrap) or 'ar' "
                             "(approximate randomization).")
  _check_samples(n, "n")
  if len(systems) < 2:
    raise errors.ConfigError(f"{len(systems)} system(s) given; a paired test needs a baseline and at least "
                             "one other system.")
  if baseline not in systems:
    raise errors.ConfigError(f"baseline={baseline!r} is not one of the systems {sorted(systems)}; name one.")
  named = [(baseline, _hypotheses(systems[baseline], f"system {baseline!r}"))]
  named += [(name, _hypotheses(h, f"system {name!r}")) for name, h in systems.items() if name != baseline]
  n_lines = len(named[0][1])
  for name, hyps in named:
    if len(hyps) != n_lines:
      raise errors.DataError(f"system {name!r} has {len(hyps)} sentences but baseline {baseline!r} has "
                             f"{n_lines}; give every system one line per reference sentence.")
  streams = reference_streams(references, n_lines)
  metrics = _new_metrics()
  with _sacrebleu_seed(seed):
    # n_ar_confidence: bootstrap resamples for the CI under `ar` (ignored by `bs`, whose resamples give it).
    test = PairedTest(named, metrics, streams, test_type=method, n_samples=n, n_ar_confidence=n, n_jobs=1)
    signatures, results = test()
  # SacreBLEU keys results by its score names (BLEU, chrF2, TER), in the order of `metrics`.
  sacre_names = [k for k in results if k != "System"]
  rows = []
  for key, sacre_name in zip(metrics, sacre_names):
    per_system = results[sacre_name]
    base_score = float(per_system[0].score)
    for i, (name, result) in enumerate(zip(results["System"], per_system)):
      score = float(result.score)
      p = None if result.p_value is None else float(result.p_value)
      rows.append({
        "system": name,
        "metric": key,
        "score": score,
        "delta": score - base_score,
        "mean": None if result.mean is None else float(result.mean),
        "ci": None if result.ci is None else float(result.ci),
        "p_value": p,
        "significant": bool(i > 0 and p is not None and p < ALPHA and score != base_score),
        "baseline": i == 0,
        "higher_is_better": HIGHER_IS_BETTER[key],
        "signature": str(signatures[sacre_name]),
      })
  return rows


def _cell(value, fmt):
  """`value` formatted with `fmt`, or '-' for None."""
  return "-" if value is None else format(value, fmt)


def format_table(rows) -> str:
  """A plain-text table of paired_significance rows: one line per system and metric."""
  header = ("System", "Metric", "Score", "Delta", "95% CI (mean +- ci)", "p-value", "Significant")
  lines = []
  for r in rows:
    ci = "-" if r.get("mean") is None else f"{r['mean']:.2f} +- {r['ci']:.2f}"
    if r.get("baseline"):
      delta, p, sig = "-", "(baseline)", "-"
    else:
      delta, p = _cell(r.get("delta"), "+.2f"), _cell(r.get("p_value"), ".4f")
      sig = "yes" if r.get("significant") else "no"
    lines.append((str(r["system"]), str(r["metric"]), _cell(r["score"], ".2f"), delta, ci, p, sig))
  widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
  left = {0, 1}  # text columns left-aligned, numbers right-aligned

  def render(cells):
    """One table line with padded cells."""
    return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

  out = [render(header), "  ".join("-" * w for w in widths)] + [render(line) for line in lines]
  return "\n".join(out)


def significance_summary(rows) -> str:
  """One line per non-baseline system and metric saying whether it differs significantly, and which way."""
  out = []
  base = {r["metric"]: r["system"] for r in rows if r.get("baseline")}
  for r in rows:
    if r.get("baseline"):
      continue
    if r["significant"]:
      better = (r["delta"] > 0) == r["higher_is_better"]
      verdict = f"significantly {'better' if better else 'worse'}"
    else:
      verdict = "not significantly different"
    p = _cell(r.get("p_value"), ".4f")
    out.append(f"{r['system']} vs {base.get(r['metric'], 'baseline')}: {r['metric']} {r['delta']:+.2f} "
               f"(p = {p}): {verdict}")
  return "\n".join(out)
