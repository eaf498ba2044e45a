"""Parallel corpora stored as plain text: DIR/<split>.<language>, one sentence per line.

Line N of DIR/train.en translates line N of DIR/train.de. This is the layout a
user provides for their own corpus, and the layout the LibreOffice help cache
is written in, so both go through `load_text_files` and `write_text_files`.
"""

import os
import re
from typing import Iterable, Mapping, Sequence

from absl import logging

from tx_jax.errors import DataError

Pair = tuple[str, str]

DEFAULT_SPLITS = ("train", "validation", "test")

_LINE_BREAKS = re.compile(r"[\r\n]+")


def _layout(data_dir: str, splits: Iterable[str], source: str, target: str) -> str:
  return (f"{data_dir}/{{{','.join(splits)}}}.{{{source},{target}}}, one sentence per "
          f"line, line N of each .{source} file translating line N of the .{target} file")


def read_lines(path: str) -> list[str]:
  """Stripped lines of a UTF-8 text file (universal newlines: \\n, \\r\\n and \\r end a line)."""
  with open(path, encoding="utf-8") as f:
    return [line.strip() for line in f]


def load_text_files(data_dir: str,
                    source_language: str,
                    target_language: str,
                    splits: Sequence[str] = DEFAULT_SPLITS) -> dict[str, list[Pair]]:
  """Reads DIR/<split>.<source>, DIR/<split>.<target> into {split: [(source, target)]}."""
  result = {}
  for split in splits:
    paths = [os.path.join(data_dir, f"{split}.{lang}")
             for lang in (source_language, target_language)]
    for path in paths:
      if not os.path.isfile(path):
        raise DataError(
            f"Missing corpus file {path}. Expected the layout "
            f"{_layout(data_dir, splits, source_language, target_language)}.")
    try:
      source_lines, target_lines = (read_lines(path) for path in paths)
    except UnicodeDecodeError as e:
      raise DataError(f"Corpus files {paths[0]} and {paths[1]} must be UTF-8 text: {e}.") from e
    if len(source_lines) != len(target_lines):
      raise DataError(
          f"{paths[0]} has {len(source_lines)} lines but {paths[1]} has "
          f"{len(target_lines)}; they must have the same number of lines, line N of "
          f"one translating line N of the other.")
    pairs = [(s, t) for s, t in zip(source_lines, target_lines) if s and t]
    skipped = len(source_lines) - len(pairs)
    if skipped:
      logging.warning("Skipped %d of %d lines of %s / %s that are empty on either side.",
                      skipped, len(source_lines), paths[0], paths[1])
    result[split] = pairs
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
