"""The task registry: the one place a task is looked up (and compared) by name.

    task = tasks.get(config)   # Translation, LanguageModel, MaskedLM or Classification
    task.family, task.train_batches(...), task.metric_sums(...), task.baselines(...)

Adding a task is one tx_jax.tasks.base.Task subclass and one entry in REGISTRY.
"""

from tx_jax import errors
from tx_jax.tasks.base import Task
from tx_jax.tasks.classification import Classification
from tx_jax.tasks.language_model import LanguageModel
from tx_jax.tasks.masked_lm import MaskedLM
from tx_jax.tasks.translation import Translation

REGISTRY = {task.name: task for task in (Translation(), LanguageModel(), MaskedLM(), Classification())}
DEFAULT = "translation"  # configs written before tasks existed are translation configs


def get(config_or_name) -> Task:
  """The Task of a config (its `task` field, translation when unset) or of a task name."""
  name = config_or_name if isinstance(config_or_name, str) else config_or_name.get("task", DEFAULT)
  if name not in REGISTRY:
    raise errors.ConfigError(f"config.task={name!r} is unknown; use one of {tuple(REGISTRY)}.")
  return REGISTRY[name]


def is_translation(config) -> bool:
  """Whether the config's task decodes sentences into another language (translate, BLEU)."""
  return get(config).name == "translation"


def is_language_model(config) -> bool:
  """Whether the config's task samples continuations (tx_jax.generate)."""
  return get(config).name == "lm"
