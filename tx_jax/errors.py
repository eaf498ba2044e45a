"""Errors a user can cause, each carrying one message that names the cause and the fix."""


class UserError(Exception):
  """A mistake the user can fix (config, data, checkpoint); printed without a traceback."""


class ConfigError(UserError):
  """A config value is invalid; the message names the field."""


class DataError(UserError):
  """Data is missing, unreadable or malformed; the message says how to provide it."""


class CheckpointError(UserError):
  """A checkpoint is missing or unreadable; the message says where it looked."""
