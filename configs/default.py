"""Default: a small Transformer translating German -> English LibreOffice help, offline, on CPU in minutes."""

from configs import base


def get_config():
  """The config `make demo` trains: real data fetched through apt, a model sized for 2 CPU cores (base's defaults)."""
  return base.get_config()
