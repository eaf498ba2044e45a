"""Issue #14's float32 bars, held in one place for the two scripts that measure them, and their verdict."""

# decode_vs_flax.py: tx_jax / flax_wmt output tokens/s, at both shapes.
DECODE_BARS = {"greedy": 2.0, "beam 4": 2.5}
# train_vs_peers.py: tx_jax / peer target tokens/s at both shapes, and the base step's share of jax's ceiling.
TRAIN_RATIO_BARS = {"flax_wmt": 1.3, "torch_eager": 1.0}
TRAIN_CEILING_BAR = dict(shape="base", percent=60.0)


def verdict(value: float, bar: float, unit: str) -> str:
  """` (bar 1.3x: met)` or ` (bar 60.0 %: missed)`: `value` against one of the bars."""
  return f" (bar {bar}{unit}: {'met' if value >= bar else 'missed'})"
