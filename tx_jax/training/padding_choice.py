"""config.token_capacity ("auto" or < 1): the host picks, batch by batch, a step without the padding or the padded one.

A `jax.lax.cond` between the two computations inside one compiled step compiles both and keeps
buffers for both: at the base shape twice the first step's compile and ~1.2 GB more host memory
(experiments/README.md). With one process the host holds every row of the batch, so it counts
each group's real tokens itself (the segment ids, a few KB) and calls a compiled step: for a fixed
share the one without the padding, which `lower` hands to the compile-ahead, or the padded one,
compiled the first time a batch does not fit. With several processes no host sees the whole
batch and a host-side choice would cost a collective a step, so the step decides on the device.

config.token_capacity="auto" (the default; one process) leaves the share to each batch: the smallest
multiple of 1/16 of a group's slots that holds its fullest group, each share's step compiled the
first time a batch needs it, and the padded step (compiled ahead) for batches fuller than 14/16, such
as tx_jax's packed rows. The choice is a function of the batch alone, so a resumed run computes each
batch as the uninterrupted one did. With several processes "auto" computes the padding.
"""

import fractions
import math
import time
from typing import Callable

import jax
from absl import logging

from tx_jax.models import token_layout
from tx_jax.training import step as step_lib


def microbatch_segments(task, batch: dict, grad_accum_steps: int) -> list:
  """The padding segments {name: [rows, len]} of each microbatch the step splits `batch` into, on the host.

  Only the segments leave the devices (a few KB), not the batch.
  """
  micro = step_lib.microbatches(jax.device_get(task.padding_segments(batch)), grad_accum_steps)
  return [jax.tree.map(lambda x, j=j: x[j], micro) for j in range(grad_accum_steps)]


def batch_fits(task, batch: dict, *, groups: int, fraction: float, grad_accum_steps: int) -> bool:
  """Whether every microbatch's groups of rows (one per batch shard) hold at most `fraction` of their slots in tokens."""
  return all(bool(token_layout.all_fit(segments, groups, fraction))
             for segments in microbatch_segments(task, batch, grad_accum_steps))


AUTO_STEPS = 16  # "auto": shares in steps of 1/16 of a group's slots (at most this many compiled steps)
AUTO_LIMIT = 14  # "auto": batches needing more than 14/16 run the padded step (README "Training options")


def needed_share(task, batch: dict, *, groups: int, grad_accum_steps: int) -> fractions.Fraction:
  """The largest share of its slots any group of rows fills with tokens, over the microbatches the step splits."""
  return max(token_layout.fullest_share(segments, groups)
             for segments in microbatch_segments(task, batch, grad_accum_steps))


def auto_share(needed) -> float | None:
  """config.token_capacity="auto": the multiple of 1/16 that holds a `needed` share of slots; None: the padded step."""
  steps = max(1, math.ceil(fractions.Fraction(needed) * AUTO_STEPS))  # exact: a float's own value, not rounded
  return steps / AUTO_STEPS if steps <= AUTO_LIMIT else None


class ChosenOnHost:
  """A train fn (state, batch) -> (state, sums) running `build(share)` for each batch's `choose(batch)`.

  A share is the fraction of slots a step computes on; None is the padded step. Each share's
  step is built (and compiled) the first time a batch needs it; `ahead` is the one compile-ahead builds,
  `most` the largest share computed without the padding, `setting` config.token_capacity.
  """

  def __init__(self, build: Callable, choose: Callable[[dict], float | None], *, ahead: float | None, most: float,
               setting):
    self._build, self._choose, self._ahead, self._most, self._setting = build, choose, ahead, most, setting
    self._steps = {}
    self._compile_seconds = 0.0  # spent compiling steps on first use, since take_compile_seconds last ran

  def step(self, share: float | None) -> Callable:
    """The compiled train fn computing on `share` of the slots (None: on all, the padding too), built on first use."""
    if share not in self._steps:
      self._steps[share] = self._build(share)
    return self._steps[share]

  def __call__(self, state, batch: dict):
    """One train step on global batch `batch`, the step picked by counting its tokens on the host."""
    share = self._choose(batch)
    if share not in self._steps:
      if share is None:
        logging.info("A batch fills more than %g of its slots (config.token_capacity=%r): it and any like it run "
                     "the padded train step, compiled now (train/over_capacity counts them).", self._most,
                     self._setting)
      else:  # "auto" meets a new share, or the first batch without compile-ahead
        logging.info("config.token_capacity=%r: the train step computing on %g of the slots compiles now.",
                     self._setting, share)
      start = time.perf_counter()
      self.step(share).lower(state, batch).compile()  # into JAX's caches, where the call below finds it
      seconds = time.perf_counter() - start
      logging.info("Compiled it in %.1fs (perf/share_compile_seconds; not counted in the throughput).", seconds)
      self._compile_seconds += seconds
    return self.step(share)(state, batch)

  def take_compile_seconds(self) -> float:
    """Seconds spent compiling the steps batches first needed since the last call, which then restarts the count."""
    seconds, self._compile_seconds = self._compile_seconds, 0.0
    return seconds

  def lower(self, *args):
    """The step compile-ahead compiles, lowered for `args`: the fixed share's, or for "auto" the padded one."""
    return self.step(self._ahead).lower(*args)


def train_fn(build: Callable, *, task, fraction, step_groups: int, groups: int, grad_accum_steps: int):
  """The train fn for config.token_capacity=fraction, from build(token_capacity) -> train fn (state, batch).

  token_capacity is the task's (groups, fraction, fits) (fits False: the padded computation, which
  also reports over_capacity), None when off (1.0, or "auto" where it computes the padding). `step_groups` are
  the groups a step's task sees in its rows (jit: the batch shards; pmap: 1 a device), `groups`
  the same groups counted in the global batch. `fraction` "auto" picks a share per batch.
  """
  if fraction == "auto":
    if not task.skips_padding:
      return build(None)
    if jax.process_count() > 1:
      logging.info("config.token_capacity='auto' computes the padding with several processes (no host sees a "
                   "whole batch to pick its share); a share in (0, 1], e.g. 0.8, skips it where batches fit.")
      return build(None)

    def choose_share(batch):
      return auto_share(needed_share(task, batch, groups=groups, grad_accum_steps=grad_accum_steps))

    return ChosenOnHost(lambda share: build((step_groups, share or 1.0, share is not None)), choose_share,
                        ahead=None, most=AUTO_LIMIT / AUTO_STEPS, setting=fraction)
  if fraction >= 1.0:
    return build(None)
  if jax.process_count() > 1:
    return build((step_groups, fraction, None))  # decided on the device

  def choose(batch):
    fits = batch_fits(task, batch, groups=groups, fraction=fraction, grad_accum_steps=grad_accum_steps)
    return fraction if fits else None

  return ChosenOnHost(lambda share: build((step_groups, fraction, share is not None)), choose, ahead=fraction,
                      most=fraction, setting=fraction)
