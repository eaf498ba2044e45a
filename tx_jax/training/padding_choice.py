"""config.token_capacity < 1: the host picks, batch by batch, the train step without the padding or the padded one.

A `jax.lax.cond` between the two computations inside one compiled step compiles both and keeps
buffers for both: at the base shape twice the first step's compile and ~1.2 GB more host memory
(experiments/README.md). With one process the host holds every row of the batch, so it counts
each group's real tokens itself (the segment ids, a few KB) and calls one of two compiled steps:
the one without the padding, which `lower` hands to the compile-ahead, and the padded one,
compiled the first time a batch does not fit. With several processes no host sees the whole
batch and a host-side choice would cost a collective a step, so the step decides on the device.
"""

from typing import Callable

import jax
from absl import logging

from tx_jax.models import token_layout
from tx_jax.training import step as step_lib


def batch_fits(task, batch: dict, *, groups: int, fraction: float, grad_accum_steps: int) -> bool:
  """Whether every microbatch's groups of rows (one per batch shard) hold at most `fraction` of their slots in tokens."""
  micro = step_lib.microbatches(batch, grad_accum_steps)
  return all(bool(token_layout.all_fit(task.padding_segments(jax.tree.map(lambda x, j=j: x[j], micro)), groups,
                                       fraction))
             for j in range(grad_accum_steps))


class ChosenOnHost:
  """A train fn (state, batch) -> (state, sums) that runs `build(fits)` for each batch's `fits(host batch)`."""

  def __init__(self, build: Callable[[bool], Callable], fits: Callable[[dict], bool], fraction: float):
    self._build, self._fits, self._fraction, self._steps = build, fits, fraction, {}

  def step(self, fits: bool) -> Callable:
    """The compiled train fn without the padding (fits) or with it, built on first use."""
    if fits not in self._steps:
      if not fits:
        logging.info("A batch has more real tokens than config.token_capacity=%s leaves slots for: it and any like it "
                     "run the padded train step, compiled now (train/over_capacity counts them).", self._fraction)
      self._steps[fits] = self._build(fits)
    return self._steps[fits]

  def __call__(self, state, batch: dict):
    """One train step on global batch `batch`, the step picked by counting its tokens on the host."""
    return self.step(self._fits(jax.device_get(batch)))(state, batch)

  def lower(self, *args):
    """The step without the padding lowered for `args` (what compile-ahead compiles: the step most batches run)."""
    return self.step(True).lower(*args)


def train_fn(build: Callable, *, task, fraction: float, step_groups: int, groups: int, grad_accum_steps: int):
  """The train fn for config.token_capacity=fraction, from build(token_capacity) -> train fn (state, batch).

  token_capacity is the task's (groups, fraction, fits), None when off (1.0). `step_groups` are
  the groups a step's task sees in its rows (jit: the batch shards; pmap: 1 a device), `groups`
  the same groups counted in the global batch.
  """
  if fraction >= 1.0:
    return build(None)
  if jax.process_count() > 1:
    return build((step_groups, fraction, None))  # decided on the device

  def fits(host_batch):
    return batch_fits(task, host_batch, groups=groups, fraction=fraction, grad_accum_steps=grad_accum_steps)

  return ChosenOnHost(lambda fit: build((step_groups, fraction, fit)), fits, fraction)
