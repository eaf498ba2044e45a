"""TensorBoard scalars, text and images (tensorboardX: no TensorFlow needed), written by process 0 only."""

import os
import sys

import jax
import numpy as np


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch unless the process has imported torch already.

  tensorboardX imports torch at module level whenever it is installed, only to accept torch tensors
  (we pass numpy): ~1 s of every run's start-up where torch happens to be installed, paid before the
  first step. Imported here, not at the top, so the entry points that write no event file pay nothing.
  """
  hide_torch = "torch" not in sys.modules
  if hide_torch:
    sys.modules["torch"] = None  # `import torch` raises ImportError; tensorboardX then takes numpy arrays
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  finally:
    if hide_torch:
      del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Writes scalars under stable tags to WORKDIR/tensorboard; a no-op on processes other than 0."""

  def __init__(self, workdir: str):
    self.writer = None
    if jax.process_index() == 0:
      self.writer = _summary_writer_class()(os.path.join(workdir, "tensorboard"), flush_secs=10)

  def scalars(self, step: int, values: dict):
    """Writes each {tag: value} at `step`."""
    if self.writer:
      for tag, value in values.items():
        self.writer.add_scalar(tag, float(value), step)

  def text(self, step: int, tag: str, text: str):
    """Writes a markdown text block (e.g. the config, sample translations)."""
    if self.writer:
      self.writer.add_text(tag, text, step)

  def image(self, step: int, tag: str, array: np.ndarray):
    """Writes an RGB image, uint8 [height, width, 3] (e.g. tx_jax.inference.attention_plots.attention_image)."""
    if self.writer:
      self.writer.add_image(tag, array, step, dataformats="HWC")

  def flush(self):
    """Makes everything written so far visible to TensorBoard."""
    if self.writer:
      self.writer.flush()

  def close(self):
    """Flushes and closes the event file."""
    if self.writer:
      self.writer.close()


def summarize(sums: dict, prefix: str) -> dict:
  """Per-token means of summed metrics: loss, nll, accuracy, and perplexity (of nll) or macro-F1.

  A "confusion" matrix [true, predicted] in `sums` marks classification: it reports macro-F1
  (the unweighted mean over classes of per-class F1) instead of perplexity.
  """
  confusion = sums.get("confusion")
  sums = {k: float(np.asarray(v)) for k, v in sums.items() if k != "confusion"}
  tokens = max(sums["tokens"], 1.0)
  out = {f"{prefix}/loss": sums["loss"] / tokens, f"{prefix}/nll": sums["nll"] / tokens,
         f"{prefix}/accuracy": sums["correct"] / tokens}
  if confusion is None:
    out[f"{prefix}/perplexity"] = float(np.exp(min(sums["nll"] / tokens, 50.0)))
  else:
    out[f"{prefix}/macro_f1"] = macro_f1(np.asarray(confusion))
  steps = sums.get("steps")
  if steps:
    out[f"{prefix}/grad_norm"] = sums["grad_norm"] / steps
    out[f"{prefix}/learning_rate"] = sums["learning_rate"]
    if "over_capacity" in sums:  # token_capacity "auto" or < 1: batches per step that ran the padded computation
      out[f"{prefix}/over_capacity"] = sums["over_capacity"] / steps
  return out


def macro_f1(confusion: np.ndarray) -> float:
  """Mean over classes of F1 = 2 TP / (2 TP + FP + FN), from a [true, predicted] count matrix."""
  tp = np.diag(confusion)
  denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # (TP + FP) + (TP + FN)
  return float(np.mean(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)))
