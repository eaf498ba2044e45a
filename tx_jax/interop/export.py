"""tx_jax config + params -> a Hugging Face directory (config.json, model.safetensors) that transformers loads."""

import json
import os

import numpy as np

from tx_jax.interop import hf_config
from tx_jax.interop import hf_weights


def export_dir(config, params, out_dir: str) -> str:
  """Writes OUT_DIR/config.json and OUT_DIR/model.safetensors for `params` of the flat tx_jax `config`.

  Stops with a ConfigError naming the switch when the model has no Hugging Face counterpart.
  Returns the architecture written.
  """
  from safetensors.numpy import save_file
  hf = hf_config.to_hf(config)
  state_dict = {k: np.ascontiguousarray(np.asarray(v)) for k, v in hf_weights.to_hf_state_dict(config, params).items()}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  save_file(state_dict, os.path.join(out_dir, hf_weights.SAFETENSORS), metadata={"format": "pt"})
  return hf["architectures"][0]
