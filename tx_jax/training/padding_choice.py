"""config.token_capacity < 1: the host picks, batch by batch, the train step without the padding or the padded one.

A `jax.lax.cond` between the two computations inside one compiled step compiles both and keeps
buffers for both: at the base shape twice the first step's compile and ~1.2 GB more host memory
(experiments/README.md). With one process the host holds every row of the batch, so it counts
each group's real tokens itself (the segment ids, a few KB) and calls one of two compiled steps:
the one without the padding, which `lower` hands to the compile-ahead, and the padded one,
compiled the first time a batch does not fit. With several processes no host sees the whole
batch and a host-side choice would cost a collective a step, so the step decides on the device.

config.token_capacity="auto" (one process) leaves the share to each batch: the smallest multiple of
1/16 of a group's slots that holds its fullest group, each share's step compiled the first time a
batch needs it, and the padded step for batches fuller than 14/16. The choice is a function of the
batch alone, so a resumed run computes each batch as the uninterrupted one did.
"""

import math
from typing import Callable

import jax
from absl import logging

from tx_jax import errors
from tx_jax.models import token_layout
from tx_jax.training import step as step_lib


def batch_fits(task, batch: dict, *, groups: int, fraction: float, grad_accum_steps: int) -> bool:
  """Whether every microbatch's groups of rows (one per batch shard) hold at most `fraction` of their slots in tokens."""
  micro = step_lib.microbatches(batch, grad_accum_steps)
  return all(bool(token_layout.all_fit(task.padding_segments(jax.tree.map(lambda x, j=j: x[j], micro)), groups,
                                       fraction))
             for j in range(grad_accum_steps))


AUTO_STEPS = 16  # "auto": shares in steps of 1/16 of a group's slots (at most this many compiled steps)
AUTO_LIMIT = 14  # "auto": batches needing more than 14/16 run the padded step (README "Training options")


def needed_share(task, batch: dict, *, groups: int, grad_accum_steps: int) -> float:
  """The largest share of its slots any group of rows fills with tokens, over the microbatches the step splits."""
  micro = step_lib.microbatches(batch, grad_accum_steps)
  return max(token_layout.fullest_share(task.padding_segments(jax.tree.map(lambda x, j=j: x[j], micro)), groups)
             for j in range(grad_accum_steps))


def auto_share(needed: float) -> float | None:
  """config.token_capacity="auto": the multiple of 1/16 that holds a `needed` share of slots; None: the padded step."""
  steps = max(1, math.ceil(round(needed * AUTO_STEPS, 9)))  # round: 12/16 computed as 0.7500000001 stays 12
  return steps / AUTO_STEPS if steps <= AUTO_LIMIT else None


class ChosenOnHost:
  """A train fn (state, batch) -> (state, sums) running `build(share)` for each batch's `choose(host batch)`.

  A share is the fraction of slots a step computes on; None is the padded step. Each share's
  step is built (and compiled) the first time a batch needs it; `ahead` is the one compile-ahead builds.
  """

  def __init__(self, build: Callable, choose: Callable[[dict], float | None], *, ahead: float | None, setting):
    self._build, self._choose, self._ahead, self._setting, self._steps = build, choose, ahead, setting, {}

  def step(self, share: float | None) -> Callable:
    """The compiled train fn computing on `share` of the slots (None: on all, the padding too), built on first use."""
    if share not in self._steps:
      if share is None:
        logging.info("A batch has more real tokens than config.token_capacity=%r leaves slots for: it and any like it "
                     "run the padded train step, compiled now (train/over_capacity counts them).", self._setting)
      elif share != self._ahead:
        logging.info("config.token_capacity=%r: a batch fills at most %g of its slots; the train step for that share "
                     "compiles now.", self._setting, share)
      self._steps[share] = self._build(share)
    return self._steps[share]

  def __call__(self, state, batch: dict):
    """One train step on global batch `batch`, the step picked by counting its tokens on the host."""
    return self.step(self._choose(jax.device_get(batch)))(state, batch)

  def lower(self, *args):
    """The step compile-ahead compiles, lowered for `args`: the fixed share's, or for "auto" the padded one."""
    return self.step(self._ahead).lower(*args)


def train_fn(build: Callable, *, task, fraction, step_groups: int, groups: int, grad_accum_steps: int):
  """The train fn for config.token_capacity=fraction, from build(token_capacity) -> train fn (state, batch).

  token_capacity is the task's (groups, fraction, fits), None when off (1.0). `step_groups` are
  the groups a step's task sees in its rows (jit: the batch shards; pmap: 1 a device), `groups`
  the same groups counted in the global batch. `fraction` "auto" picks a share per batch.
  """
  if fraction == "auto":
    if jax.process_count() > 1:
      raise errors.ConfigError("config.token_capacity='auto' needs one process: the host that picks a batch's share "
                               "must see all of it. With several processes give a share in (0, 1], e.g. 0.8.")

    def choose_share(host_batch):
      return auto_share(needed_share(task, host_batch, groups=groups, grad_accum_steps=grad_accum_steps))

    return ChosenOnHost(lambda share: build((step_groups, share or 1.0, share is not None)), choose_share,
                        ahead=None, setting=fraction)
  if fraction >= 1.0:
    return build(None)
  if jax.process_count() > 1:
    return build((step_groups, fraction, None))  # decided on the device

  def choose(host_batch):
    fits = batch_fits(task, host_batch, groups=groups, fraction=fraction, grad_accum_steps=grad_accum_steps)
    return fraction if fits else None

  return ChosenOnHost(lambda share: build((step_groups, fraction, share is not None)), choose, ahead=fraction,
                      setting=fraction)
