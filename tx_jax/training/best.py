"""Keep-best checkpoints and early stopping on one evaluation metric, with a count that survives restarts.

`config.best_metric` (e.g. "eval/bleu", "eval/loss") names a scalar of the periodic evaluation.
Every evaluation step saves a checkpoint carrying that value, and Orbax's preservation policies
keep the newest `max_checkpoints_to_keep` checkpoints plus the best `keep_best`. The tracker's
state (best value and step, evaluations since the best) is saved in every checkpoint, in the
"loop" item, so a restarted run continues the patience count instead of starting it over
(the OpenNMT-py bug #2006).
"""

import dataclasses
import math

from orbax.checkpoint import checkpoint_managers

from tx_jax import errors

# Metrics where lower is better; every other metric (bleu, chrf, accuracy, f1, ...) is better higher.
LOWER_IS_BETTER = ("loss", "nll", "perplexity", "ter", "bits_per_byte")


def mode(config) -> str:
  """"min" or "max": config.best_mode, or for "auto" what the metric's last name part implies."""
  if config.best_mode != "auto":
    return config.best_mode
  return "min" if config.best_metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER else "max"


def preservation_policy(config):
  """Orbax's policy: the newest max_checkpoints_to_keep, plus the best keep_best by config.best_metric."""
  latest = checkpoint_managers.LatestN(n=config.max_checkpoints_to_keep)
  if not config.get("best_metric"):
    return latest
  best = checkpoint_managers.BestN(get_metric_fn=metric_fn(config.best_metric, mode(config)),
                                   reverse=mode(config) == "min",
                                   n=config.keep_best, keep_checkpoints_without_metrics=False)
  return checkpoint_managers.AnyPreservationPolicy([latest, best])


def metric_fn(name: str, best_mode: str):
  """The function Orbax calls on a checkpoint's saved metrics to rank it.

  A checkpoint without the metric (saved while the run ranked by another best_metric) or with a
  non-finite value ranks worst, rather than stopping every later save with a KeyError or sorting on a NaN.
  """
  worst = math.inf if best_mode == "min" else -math.inf

  def value(metrics) -> float:
    x = float(metrics.get(name, worst))
    return x if math.isfinite(x) else worst
  return value


@dataclasses.dataclass
class Tracker:
  """The best value of the metric so far, where it was reached, and how many evaluations failed to beat it."""

  metric: str
  mode: str  # "min" or "max"
  patience: int  # evaluations without improvement before stopping; 0: never stop
  best_value: float | None = None
  best_step: int | None = None
  evals_since_best: int = 0

  @classmethod
  def from_config(cls, config, state: dict | None = None) -> "Tracker":
    """A tracker of config.best_metric, continuing `state` (the "best" entry of a checkpoint's loop item)."""
    tracker = cls(config.best_metric, mode(config), config.early_stopping_patience)
    if state and state.get("metric") == tracker.metric and state.get("mode") == tracker.mode:
      tracker.best_value, tracker.best_step = state["best_value"], state["best_step"]
      tracker.evals_since_best = int(state["evals_since_best"])
    return tracker

  def update(self, step: int, summary: dict) -> bool:
    """Records the metric's value at `step` from an evaluation summary; True when it is a new best."""
    if self.metric not in summary:
      raise errors.ConfigError(f"config.best_metric={self.metric!r} is not among this task's evaluation metrics "
                               f"{sorted(k for k in summary if k.startswith('eval/'))}; pick one of them.")
    value = float(summary[self.metric])
    better = math.isfinite(value) and (
      self.best_value is None or (value < self.best_value if self.mode == "min" else value > self.best_value))
    if better:
      self.best_value, self.best_step, self.evals_since_best = value, step, 0
    else:
      self.evals_since_best += 1
    return better

  def best_text(self) -> str:
    """The best so far for a log line: "3.1416 of step 6", or that no evaluation gave a finite value."""
    if self.best_value is None:
      return "no finite value yet"
    return f"{self.best_value:.4f} of step {self.best_step}"

  def should_stop(self) -> bool:
    """True once `patience` evaluations in a row have not beaten the best (never with patience 0)."""
    return self.patience > 0 and self.evals_since_best >= self.patience

  def state(self) -> dict:
    """What the "loop" checkpoint item stores."""
    return dataclasses.asdict(self)
