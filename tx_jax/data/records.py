"""Prepared corpora as ArrayRecord shards in the data cache: written once, atomically, read by index.

A prepared split is a directory <cache>/records/<key>/<split>/ holding shard-NNNNN.array_record
files of JSON records (one dict per example) and a stats.json with the record count and the
lines skipped per reason. It is written beside its final place and renamed into it in one step,
so a killed preparation never leaves half a split, and several processes preparing the same
split at once end with the same files.
"""

import json
import os
import shutil
import sys
import time

import grain
from absl import logging
from array_record.python import array_record_module

from tx_jax import errors

RECORDS_PER_SHARD = 100_000
STATS_FILE = "stats.json"


class JsonRecords(grain.sources.RandomAccessDataSource):
  """Random access to the JSON records of a prepared split: records[i] is a dict."""

  def __init__(self, directory: str):
    self.directory = directory
    with open(os.path.join(directory, STATS_FILE)) as f:
      self.stats = json.load(f)
    paths = [os.path.join(directory, name) for name in sorted(os.listdir(directory)) if name.endswith(".array_record")]
    self._source = grain.sources.ArrayRecordDataSource(paths) if paths else None

  def __len__(self) -> int:
    return 0 if self._source is None else len(self._source)

  def __getitem__(self, index: int) -> dict:
    return json.loads(self._source[index])

  def __repr__(self) -> str:
    return f"JsonRecords({self.directory!r}, {len(self)} records)"


class _Progress:
  """A line-count progress bar on stderr for long preparations (one line, redrawn every 2 s)."""

  def __init__(self, what: str):
    self.what, self.start, self.last = what, time.time(), 0.0

  def update(self, count: int, final: bool = False):
    """Redraws the count when 2 s have passed (or at the end); silent for splits under 10k records."""
    now = time.time()
    if count >= 10_000 and (final or now - self.last > 2.0):
      self.last = now
      rate = count / max(now - self.start, 1e-9)
      sys.stderr.write(f"\r{self.what}: {count:,} records ({rate:,.0f}/s)" + ("\n" if final else ""))
      sys.stderr.flush()


def split_dir(cache_dir: str, key: str, split: str) -> str:
  """Where the prepared `split` of corpus `key` lives."""
  return os.path.join(os.path.expanduser(cache_dir), "records", key, split)


def prepared(directory: str) -> bool:
  """Whether `directory` holds a complete prepared split."""
  return os.path.exists(os.path.join(directory, STATS_FILE))


def write_split(directory: str, records, skipped: dict | None = None) -> dict:
  """Writes an iterable of dict records as shards of `directory`, atomically; returns its stats.

  `skipped` (reason -> count) is filled by the iterable as it reads (bad lines it left out) and
  stored with the record count.
  """
  partial = f"{directory}.partial{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  progress = _Progress(f"Preparing {directory}")
  count, writer = 0, None
  try:
    os.makedirs(partial)  # inside: a cache directory that cannot be made is the error below, not a traceback
    for record in records:
      if count % RECORDS_PER_SHARD == 0:
        if writer is not None:
          writer.close()
        path = os.path.join(partial, f"shard-{count // RECORDS_PER_SHARD:05d}.array_record")
        writer = array_record_module.ArrayRecordWriter(path, "group_size:1")  # group_size 1: fast random reads
      writer.write(json.dumps(record, ensure_ascii=False).encode("utf-8"))
      count += 1
      if count % 10_000 == 0:
        progress.update(count)
    if writer is not None:
      writer.close()
      writer = None
    progress.update(count, final=True)
    stats = {"records": count, "skipped": dict(skipped or {})}
    with open(os.path.join(partial, STATS_FILE), "w") as f:
      json.dump(stats, f, indent=1)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    try:
      os.rename(partial, directory)
    except OSError:  # another process finished the same split first: its files equal ours
      if not prepared(directory):
        raise
      shutil.rmtree(partial, ignore_errors=True)
  except OSError as e:
    _abandon(writer, partial)
    raise errors.DataError(f"Could not write the prepared corpus {directory} ({e.strerror or e}); free disk "
                           "space or point config.data_cache_dir at a writable directory.") from None
  except BaseException:  # a malformed record, an interrupt: nothing of the split is kept
    _abandon(writer, partial)
    raise
  logging.info("Prepared %s: %d records%s", directory, count,
               f", skipped {stats['skipped']}" if any(stats["skipped"].values()) else "")
  return stats


def _abandon(writer, partial: str):
  """Closes the shard writer of a split cut short (its file handle with it) and deletes what it wrote."""
  if writer is not None:
    try:
      writer.close()
    except Exception:  # pylint: disable=broad-except  (the error that cut the split short is the one to raise)
      pass
  shutil.rmtree(partial, ignore_errors=True)


def open_split(directory: str, make_records) -> JsonRecords:
  """The prepared split at `directory`, preparing it first from `make_records()` -> (records, skipped)."""
  if not prepared(directory):
    records, skipped = make_records()
    write_split(directory, records, skipped)
  return JsonRecords(directory)
