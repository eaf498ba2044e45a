"""config.profile_steps: a real training run writes a profiler trace where TensorBoard's profile plugin finds it."""

import glob
import os

from conftest import with_fields
from tx_jax import train


def test_profile_steps_write_a_trace_into_the_tensorboard_directory(tiny_config, tmp_path):
  tiny_config.update(num_train_steps=4, profile_steps=(2, 3), eval_every_steps=1000, num_predict_sentences=0)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(tiny_config, workdir)
  # The XProf plugin lists every tensorboard/plugins/profile/<run>/ that holds a <host>.xplane.pb.
  traces = glob.glob(os.path.join(workdir, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  # The trace holds the profiled steps' XLA programs: the compiled train step appears by name.
  with open(traces[0], "rb") as f:
    assert b"train_step" in f.read()


def test_a_run_resumed_inside_the_profiled_steps_traces_the_ones_it_has_left(tiny_config, tmp_path):
  tiny_config.update(profile_steps=(2, 5), eval_every_steps=1000, num_predict_sentences=0, checkpoint_every_steps=3)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(with_fields(tiny_config, num_train_steps=3), workdir)  # its trace holds steps 2..3
  tiny_config.num_train_steps = 6  # resumes at step 4: traces 4..5, not nothing
  train.train_and_evaluate(tiny_config, workdir)
  traces = glob.glob(os.path.join(workdir, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 2 and all(os.path.getsize(t) > 0 for t in traces)
