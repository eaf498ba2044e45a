"""The config every other config starts from: every field with its one default, as tx_jax/defaults.py lists them.

The fields live in the package (tx_jax/defaults.py), so that an installed tx_jax, e.g. tx_jax.import_hf, has
them too; add a new field there.
"""

from tx_jax import defaults


def get_config():
  """A ConfigDict holding every field tx_jax reads, each at its default."""
  return defaults.get_config()
