"""Command-line parsing shared by the entry points: a mistake in a flag or a config override is one line.

absl and ml_collections report a misspelled `--config.key`, a missing config file or a value of
the wrong type with a traceback or a two-line FATAL; `flags_parser(program)` turns each into one
line naming the flag and the fix, before anything is built or compiled. `one_line_errors` does the
same for the user's mistakes found later (tx_jax.errors.UserError) and for a full disk.
"""

import contextlib
import os
import re
import sys
import traceback

from absl import flags

from tx_jax import errors


def _one_line(error: BaseException) -> str:
  """The cause of a flag-parsing error, in one line."""
  text = str(error)
  if isinstance(error, (AttributeError, KeyError)):
    suggestion = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
    name = suggestion.group(2) if suggestion else (re.findall(r"\w+", text) or ["?"])[0]
    hint = f" (did you mean config.{suggestion.group(1)}?)" if suggestion else ""
    return f"config.{name} is not a config field{hint}; every field is listed in tx_jax/defaults.py."
  if isinstance(error, OSError) and "Failed loading config file" in text:
    tried = [line.strip() for line in text.splitlines() if line.strip().endswith(".py")]
    return f"cannot load the config file {tried[0] if tried else ''}: no such file; pass --config=configs/<name>.py."
  return " ".join(text.split())


def _raised_in(error: BaseException, path: str) -> int | None:
  """The line of the config file `path` where `error` was raised (the file's own code failing), else None."""
  frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == os.path.abspath(path)]
  return frames[-1].lineno if frames else None


def flags_parser(program: str):
  """An `app.run(..., flags_parser=...)` parser that exits with one line on a bad flag or override."""

  def parse(argv):
    config_path = None
    for arg in argv[1:]:  # checked first: ml_collections prints a traceback for a missing file
      path = arg.split("=", 1)[1].split(":", 1)[0] if arg.startswith("--config=") else None
      if path and not os.path.isfile(path):
        sys.exit(f"{program}: cannot load the config file {path}: no such file; pass --config=configs/<name>.py.")
      config_path = path or config_path
    try:
      rest = flags.FLAGS(argv)
      if "config" in flags.FLAGS and flags.FLAGS["config"].present:
        _ = flags.FLAGS.config  # a config file that fails to load raises here, not while parsing
      return rest
    except Exception as e:  # pylint: disable=broad-except  (a config file's own code may raise anything)
      cause = e.__cause__ if isinstance(e, flags.Error) and e.__cause__ is not None else e
      line = _raised_in(cause, config_path) if config_path else None
      if line is not None:  # the file's own code, not an override: not a "missing field"
        sys.exit(f"{program}: the config file {config_path} failed at line {line}: {type(cause).__name__}: "
                 f"{' '.join(str(cause).split())}")
      if not isinstance(cause, (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError)):
        raise
      sys.exit(f"{program}: {_one_line(cause)}")
  return parse


@contextlib.contextmanager
def one_line_errors(program: str, writes_to: str | None = None):
  """Ends `program` with one line, no traceback, on a UserError or on a full disk (naming `writes_to` and the fix)."""
  try:
    yield
  except errors.UserError as e:
    sys.exit(f"{program}: {e}")
  except Exception as e:  # pylint: disable=broad-except  (Orbax and TensorStore report a full disk as several types)
    if not errors.disk_full(e):
      raise
    where = f" writing to {os.path.abspath(os.path.expanduser(writes_to))}" if writes_to else ""
    sys.exit(f"{program}: no space left on device{where}; free space there and run the same command again.")


def split_list(values) -> list:
  """The items of a repeated flag whose values may also be comma-separated lists, blanks dropped."""
  return [p.strip() for v in values or () for p in v.split(",") if p.strip()]
