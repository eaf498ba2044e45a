"""Errors a user can cause, each carrying one message that names the cause and the fix."""

import errno
import os


class UserError(Exception):
  """A mistake the user can fix (config, data, checkpoint); printed without a traceback."""


class ConfigError(UserError):
  """A config value is invalid; the message names the field."""


class DataError(UserError):
  """Data is missing, unreadable or malformed; the message says how to provide it."""


class CheckpointError(UserError):
  """A checkpoint is missing or unreadable; the message says where it looked."""


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(e: BaseException | None) -> bool:
  """Whether `e` or an exception it wraps says the disk is full or the quota used up (errno, or TensorStore's text).

  Orbax reports TensorStore's failed writes as ValueError("RESOURCE_EXHAUSTED: ... No space left on device
  [os_error_code='28']"), sometimes re-raised from a background thread; Python's own writes raise OSError(ENOSPC).
  """
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if getattr(e, "errno", None) in _DISK_FULL_ERRNOS or any(os.strerror(n) in str(e) for n in _DISK_FULL_ERRNOS):
      return True
    e = e.__cause__ or e.__context__
  return False
