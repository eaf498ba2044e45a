"""SacreBLEU BLEU/chrF/TER with confidence intervals and paired tests (tx_jax.inference.scores, tx_jax.compare)."""

import os
import subprocess
import sys

import pytest
import sacrebleu

from tx_jax import errors
from tx_jax.inference import scores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_SENTENCES = 400


def _generated_sentences(n):
  """`n` distinct English sentences built from a few lists of phrases (used when no cached corpus exists)."""
  subjects = ["The dialog", "This function", "The spreadsheet", "A new window", "The toolbar", "Your document",
              "The macro", "The chart", "Each cell", "The sidebar"]
  verbs = ["shows", "updates", "removes", "inserts", "selects", "formats", "saves", "opens"]
  objects = ["the selected text", "all hidden rows", "the current page", "a list of styles",
             "the print range", "every comment"]
  tails = ["when you press Enter.", "in the active sheet.", "before the file is closed."]
  out = []
  for i in range(n):
    s, v, o, t = (subjects[i % 10], verbs[(i // 10) % 8], objects[(i // 80) % 6], tails[(i // 480) % 3])
    out.append(f"{s} {v} {o} {t}")
  return out


@pytest.fixture(scope="module")
def references(data_cache_dir):
  """400 English reference sentences: the cached LibreOffice help test split if present, else generated."""
  path = os.path.join(data_cache_dir, "libreoffice_help", "de", "test.en")
  if os.path.exists(path):
    with open(path, encoding="utf-8", errors="replace") as f:
      lines = [line.strip() for line in f if line.strip()]
    if len(lines) >= N_SENTENCES:
      return lines[:N_SENTENCES]
  return _generated_sentences(N_SENTENCES)


def _light(ref, i):
  """A good translation: every fourth sentence loses its last word."""
  words = ref.split()
  return " ".join(words[:-1]) if i % 4 == 0 and len(words) > 1 else ref


def _heavy(ref, i):
  """A bad translation: every other word replaced by 'the', then the last third dropped."""
  words = [w if (j + i) % 2 else "the" for j, w in enumerate(ref.split())]
  return " ".join(words[:max(1, len(words) * 2 // 3)])


@pytest.fixture(scope="module")
def good(references):
  """Lightly perturbed hypotheses."""
  return [_light(r, i) for i, r in enumerate(references)]


@pytest.fixture(scope="module")
def bad(references):
  """Heavily degraded hypotheses."""
  return [_heavy(r, i) for i, r in enumerate(references)]


def test_scores_equal_sacrebleu_corpus_functions(references, bad):
  """BLEU, chrF and TER equal sacrebleu.corpus_bleu / corpus_chrf / corpus_ter, with or without the CI."""
  with_ci = scores.corpus_scores(bad, references)
  without = scores.corpus_scores(bad, references, confidence=False)
  expected = {"BLEU": sacrebleu.corpus_bleu(bad, [references]).score,
              "chrF": sacrebleu.corpus_chrf(bad, [references]).score,
              "TER": sacrebleu.corpus_ter(bad, [references]).score}
  for metric, value in expected.items():
    assert with_ci[metric]["score"] == pytest.approx(value, abs=1e-9)
    assert without[metric]["score"] == pytest.approx(value, abs=1e-9)
    assert 0 < with_ci[metric]["ci95"] < 10 and with_ci[metric]["mean"] is not None
    assert without[metric]["ci95"] is None and without[metric]["mean"] is None
    assert "bs:1000" in with_ci[metric]["signature"] and "seed:12345" in with_ci[metric]["signature"]
    assert "nrefs:1" in with_ci[metric]["signature"] and "bs:" not in without[metric]["signature"]
    assert with_ci[metric]["details"].startswith(with_ci[metric]["name"])
  assert with_ci["chrF"]["name"] == "chrF2" and "BP =" in with_ci["BLEU"]["details"]


def test_scores_with_two_references(references, good, bad):
  """Several references (a list of reference streams) score as SacreBLEU scores them."""
  streams = [references, good]
  got = scores.corpus_scores(bad, streams, confidence=False)
  assert got["BLEU"]["score"] == pytest.approx(sacrebleu.corpus_bleu(bad, streams).score, abs=1e-9)
  assert got["chrF"]["score"] == pytest.approx(sacrebleu.corpus_chrf(bad, streams).score, abs=1e-9)
  assert got["TER"]["score"] == pytest.approx(sacrebleu.corpus_ter(bad, streams).score, abs=1e-9)
  assert all("nrefs:2" in got[m]["signature"] for m in scores.METRICS)


def test_confidence_interval_shrinks_with_more_sentences(references, bad):
  """The 95% CI half-width of the same system is wider on 50 sentences than on 400."""
  small = scores.corpus_scores(bad[:50], references[:50])
  large = scores.corpus_scores(bad, references)
  for metric in scores.METRICS:
    assert small[metric]["ci95"] > 1.5 * large[metric]["ci95"], metric


def test_confidence_is_seeded_and_leaves_the_environment_alone(references, bad, monkeypatch):
  """The same seed gives the same CI; another seed another one; SACREBLEU_SEED is restored afterwards."""
  monkeypatch.setenv("SACREBLEU_SEED", "777")
  a = scores.corpus_scores(bad[:100], references[:100], n_bootstrap=200)
  b = scores.corpus_scores(bad[:100], references[:100], n_bootstrap=200)
  c = scores.corpus_scores(bad[:100], references[:100], n_bootstrap=200, seed=4)
  assert os.environ["SACREBLEU_SEED"] == "777"
  assert [a[m]["ci95"] for m in scores.METRICS] == [b[m]["ci95"] for m in scores.METRICS]
  assert [a[m]["ci95"] for m in scores.METRICS] != [c[m]["ci95"] for m in scores.METRICS]
  assert "seed:4" in c["BLEU"]["signature"]


@pytest.mark.parametrize("method", ["bs", "ar"])
def test_identical_systems_are_not_significantly_different(references, good, method):
  """A system compared with an exact copy of itself: zero difference, never significant."""
  rows = scores.paired_significance(references, {"A": good, "B": list(good)}, baseline="A", method=method,
                                    n=300)
  assert len(rows) == 6 and {r["metric"] for r in rows} == set(scores.METRICS)
  for r in rows:
    assert not r["significant"] and r["delta"] == 0
    assert (r["p_value"] is None) == r["baseline"]


def test_small_difference_is_not_significant_by_bootstrap(references, good):
  """One extra word in one of 400 sentences: SacreBLEU's own bootstrap p-value is large."""
  changed = list(good)
  changed[5] += " extra"
  rows = scores.paired_significance(references, {"A": good, "B": changed}, baseline="A", method="bs")
  for r in rows:
    if not r["baseline"]:
      assert r["delta"] != 0 and r["p_value"] > 0.05 and not r["significant"], r


@pytest.mark.parametrize("method", ["bs", "ar"])
def test_degraded_system_is_significantly_worse(references, good, bad, method):
  """Heavily degraded hypotheses differ significantly from good ones, worse on all three metrics."""
  rows = scores.paired_significance(references, {"good": good, "bad": bad}, baseline="good", method=method,
                                    n=300)
  by_key = {(r["system"], r["metric"]): r for r in rows}
  for metric in scores.METRICS:
    row = by_key["bad", metric]
    assert row["significant"] and row["p_value"] < 0.05
    assert row["delta"] < 0 if row["higher_is_better"] else row["delta"] > 0
    assert row["mean"] is not None and row["ci"] > 0
    assert f"{method}:300" in row["signature"]
    assert by_key["good", metric]["baseline"]
  summary = scores.significance_summary(rows)
  assert summary.count("significantly worse") == 3


def test_paired_scores_match_corpus_scores(references, good, bad):
  """The paired test's system scores are the plain corpus scores."""
  rows = scores.paired_significance(references, {"good": good, "bad": bad}, baseline="good", n=100)
  for name, hyps in (("good", good), ("bad", bad)):
    plain = scores.corpus_scores(hyps, references, confidence=False)
    for r in rows:
      if r["system"] == name:
        assert r["score"] == pytest.approx(plain[r["metric"]]["score"], abs=1e-9)


def test_format_table_lists_every_row(references, good, bad):
  """The plain-text table has a header, a rule and one line per system and metric."""
  rows = scores.paired_significance(references[:60], {"good": good[:60], "bad": bad[:60]}, baseline="good",
                                    n=100)
  lines = scores.format_table(rows).splitlines()
  assert lines[0].split()[:3] == ["System", "Metric", "Score"] and set(lines[1]) == {"-", " "}
  assert len(lines) == 2 + len(rows)
  assert sum("(baseline)" in line for line in lines) == 3
  assert sum(line.startswith("bad ") and line.rstrip().endswith("yes") for line in lines) == 3


def test_library_user_errors(references, good):
  """Mismatched lengths, a bad seed, an unknown baseline or method raise tx_jax UserErrors."""
  with pytest.raises(errors.DataError, match="one reference per hypothesis"):
    scores.corpus_scores(good[:-1], references)
  with pytest.raises(errors.DataError, match="has 399 sentences"):
    scores.paired_significance(references, {"A": good, "B": good[:-1]}, baseline="A")
  with pytest.raises(errors.ConfigError, match="positive integer"):
    scores.corpus_scores(good, references, seed=0)
  with pytest.raises(errors.ConfigError, match="baseline="):
    scores.paired_significance(references, {"A": good, "B": good}, baseline="C")
  with pytest.raises(errors.ConfigError, match="method="):
    scores.paired_significance(references, {"A": good, "B": good}, baseline="A", method="t-test")
  with pytest.raises(errors.ConfigError, match="at least"):
    scores.paired_significance(references, {"A": good}, baseline="A")


def _write(path, lines):
  """Writes one sentence per line."""
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return str(path)


def _run_cli(*args):
  """Runs `python -m tx_jax.compare` from the repo root."""
  return subprocess.run([sys.executable, "-m", "tx_jax.compare", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_cli_prints_the_table(tmp_path, references, good, bad):
  """The entry point prints the table and the significant differences and exits 0."""
  ref = _write(tmp_path / "ref.txt", references[:200])
  a = _write(tmp_path / "A.txt", good[:200])
  b = _write(tmp_path / "B.txt", bad[:200])
  c = _write(tmp_path / "C.txt", good[:200])
  proc = _run_cli(f"--references={ref}", f"--system={a}", f"--system={b},{c}", "--n=200")
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  assert "baseline: A.txt" in out and "(baseline)" in out and "Traceback" not in proc.stderr
  table = [line for line in out.splitlines() if line.split()[:1] in (["A.txt"], ["B.txt"], ["C.txt"])
           and " vs " not in line]
  assert len(table) == 9
  assert out.count("B.txt vs A.txt") == 3 and out.count("significantly worse") == 3
  assert out.count("C.txt vs A.txt") == 3 and out.count("not significantly different") == 3
  assert "BLEU: nrefs:1|bs:200|seed:12345" in out


@pytest.mark.parametrize("case", ["mismatched", "one_system", "missing_file"])
def test_cli_user_mistakes_print_one_line(tmp_path, references, good, case):
  """Mismatched line counts, a single system or a missing file: one line, non-zero exit, no traceback."""
  ref = _write(tmp_path / "ref.txt", references[:50])
  a = _write(tmp_path / "A.txt", good[:50])
  b = _write(tmp_path / "B.txt", good[:49])
  args = {"mismatched": [f"--system={a},{b}"], "one_system": [f"--system={a}"],
          "missing_file": [f"--system={a}", f"--system={tmp_path / 'nope.txt'}"]}[case]
  proc = _run_cli(f"--references={ref}", *args, "--method=ar", "--n=50")
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr and proc.stdout == ""
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("tx_jax.compare: "), proc.stderr
  expected = {"mismatched": "has 49 lines but the references have 50", "one_system": "at least two",
              "missing_file": "cannot read --system="}[case]
  assert expected in lines[0]


def test_confidence_on_a_tiny_test_set_where_resamples_score_zero():
  """Resamples of a few sentences often match nothing (chrF and BLEU 0.0, float32 elsewhere): CIs still come out.

  SacreBLEU 2.6 itself raises "don't know how to coerce float and float32" on this chrF bootstrap.
  """
  references = ["The dialog shows the selected text when you press Enter.",
                "This function updates all hidden rows in the active sheet.",
                "The spreadsheet removes the current page before the file is closed.",
                "A new window inserts a list of styles.", "The toolbar selects the print range.",
                "Your document formats every comment."]
  hypotheses = ["x y z"] * 3 + ["The dialog shows the selected"] + ["q"] * 2
  out = scores.corpus_scores(hypotheses, references, n_bootstrap=200)
  assert out["chrF"]["score"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
  for metric in scores.METRICS:
    assert isinstance(out[metric]["mean"], float) and out[metric]["ci95"] >= 0.0
