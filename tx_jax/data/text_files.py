"""Parallel corpora stored as plain text: DIR/<split>.<language>, one sentence per line.

Line N of DIR/train.en translates line N of DIR/train.de. This is the layout a
user provides for their own corpus, and the layout the LibreOffice help cache
is written in, so both are read by `read_parallel_lines` (streaming, line by line)
and written by `write_text_files`.

Bad lines are skipped and counted by reason instead of failing the corpus: empty
(on either side), invalid UTF-8, NUL or other control characters, longer than
`max_chars` characters. A file that cannot be read, or parallel files of different
lengths, are one clear error.
"""

import collections
import hashlib
import os
import re
from typing import Iterable, Iterator, Mapping, Sequence

from tx_jax.errors import DataError

Pair = tuple[str, str]

DEFAULT_SPLITS = ("train", "validation", "test")
MAX_LINE_CHARS = 10_000  # longer lines are skipped as "too_long"
SKIP_REASONS = ("empty", "invalid_utf8", "control_characters", "too_long")

_LINE_BREAKS = re.compile(r"[\r\n]+")
_INVALID_UTF8 = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of undecodable bytes
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")  # C0 controls but tab and newline, and DEL


def _layout(data_dir: str, splits: Iterable[str], source: str, target: str) -> str:
  return (f"{data_dir}/{{{','.join(splits)}}}.{{{source},{target}}}, one sentence per "
          f"line, line N of each .{source} file translating line N of the .{target} file")


def split_paths(data_dir: str, split: str, languages: Sequence[str]) -> list[str]:
  """DIR/<split>.<language> for each language."""
  return [os.path.join(data_dir, f"{split}.{lang}") for lang in languages]


def check_files(paths: Sequence[str], layout: str):
  """Fails with one message naming the first missing file and the expected layout."""
  for path in paths:
    if not os.path.isfile(path):
      raise DataError(f"Missing corpus file {path}. Expected the layout {layout}.")


def skip_reason(line: str, max_chars: int = MAX_LINE_CHARS) -> str | None:
  """Why a stripped line is left out of a corpus (one of SKIP_REASONS), or None to keep it."""
  if not line:
    return "empty"
  if _INVALID_UTF8.search(line):
    return "invalid_utf8"
  if _CONTROL.search(line):
    return "control_characters"
  if len(line) > max_chars:
    return "too_long"
  return None


def read_parallel_lines(paths: Sequence[str], skipped: dict | None = None,
                        max_chars: int = MAX_LINE_CHARS) -> Iterator[tuple[str, ...]]:
  """Yields the stripped lines N of all `paths` together, skipping bad ones (counted in `skipped`).

  Streams: one line of each file in memory at a time. Universal newlines (\\n, \\r\\n, \\r).
  """
  skipped = collections.Counter() if skipped is None else skipped
  files = []
  try:
    for path in paths:
      files.append(open(path, encoding="utf-8", errors="surrogateescape"))
    counts = [0] * len(files)
    while True:
      lines = [f.readline() for f in files]
      ended = [line == "" for line in lines]
      if all(ended):
        return
      if any(ended):
        for i, f in enumerate(files):  # count to the end so the message gives both lengths
          counts[i] += (not ended[i]) + sum(1 for _ in f)
        raise DataError(
          f"{paths[0]} has {counts[0]} lines but {paths[1]} has {counts[1]}; they must have the same "
          "number of lines, line N of one translating line N of the other." if len(paths) == 2 else
          f"{', '.join(f'{p} has {n} lines' for p, n in zip(paths, counts))}; they must be equally long.")
      counts = [n + 1 for n in counts]
      lines = [line.strip() for line in lines]
      reason = next((r for r in map(lambda l: skip_reason(l, max_chars), lines) if r), None)
      if reason:
        skipped[reason] = skipped.get(reason, 0) + 1
        continue
      yield tuple(lines)
  except OSError as e:
    raise DataError(f"Cannot read the corpus file {e.filename or paths}: {e.strerror}; check the path and its "
                    "permissions.") from None
  finally:
    for f in files:
      f.close()


def fingerprint(paths: Sequence[str]) -> str:
  """A short key of files' paths, sizes and modification times: two corpora never share one by accident."""
  h = hashlib.sha256()
  for path in paths:
    stat = os.stat(path)
    h.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
  return h.hexdigest()[:12]


def load_text_files(data_dir: str,
                    source_language: str,
                    target_language: str,
                    splits: Sequence[str] = DEFAULT_SPLITS) -> dict[str, list[Pair]]:
  """Reads DIR/<split>.<source>, DIR/<split>.<target> into {split: [(source, target)]} (small corpora)."""
  result = {}
  for split in splits:
    paths = split_paths(data_dir, split, (source_language, target_language))
    check_files(paths, _layout(data_dir, splits, source_language, target_language))
    result[split] = list(read_parallel_lines(paths))
  return result


def _write_atomically(path: str, lines: Iterable[str]) -> None:
  tmp_path = f"{path}.tmp{os.getpid()}"
  with open(tmp_path, "w", encoding="utf-8", newline="\n") as f:
    for line in lines:
      f.write(line)
      f.write("\n")
  os.replace(tmp_path, path)


def write_text_files(data_dir: str,
                     pairs_by_split: Mapping[str, Sequence[Pair]],
                     source_language: str,
                     target_language: str) -> None:
  """Writes {split: [(source, target)]} as DIR/<split>.<language>, each file atomically."""
  os.makedirs(data_dir, exist_ok=True)
  for split, pairs in pairs_by_split.items():
    for side, lang in enumerate((source_language, target_language)):
      # A line break inside a sentence would shift every later line.
      _write_atomically(os.path.join(data_dir, f"{split}.{lang}"),
                        (_LINE_BREAKS.sub(" ", pair[side]).strip() for pair in pairs))
