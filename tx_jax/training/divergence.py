"""A non-finite loss or gradient norm stops training with the step and the likely causes, saving nothing."""

import math

from tx_jax import errors


class TrainingDiverged(errors.UserError):
  """The loss or gradient norm became NaN or infinite."""


def check_finite(step: int, step_sums: dict, config, last_checkpoint: int | None):
  """Raises TrainingDiverged when the step's summed loss or gradient norm is not finite."""
  loss, grad_norm = float(step_sums["loss"]), float(step_sums["grad_norm"])
  if math.isfinite(loss) and math.isfinite(grad_norm):
    return
  kept = (f"the newest checkpoint (step {last_checkpoint}) was saved before it and is kept" if last_checkpoint
          else "no checkpoint was saved")
  raise TrainingDiverged(
    f"training diverged at step {step} (loss {loss}, gradient norm {grad_norm}); {kept}. Likely causes: a learning "
    f"rate too high (config.learning_rate={config.learning_rate}), a warmup too short "
    f"(config.warmup_steps={config.warmup_steps}), or {config.dtype} overflow (config.dtype); clip gradients with "
    "config.grad_clip_norm, lower the learning rate and train again from the kept checkpoint.")
