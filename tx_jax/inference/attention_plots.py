"""Attention heatmaps as matplotlib figures and RGB arrays: layers x heads grids labelled with tokens.

The library behind `python -m tx_jax.visualize` and the attention pictures training writes to TensorBoard.
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tx_jax.inference import attention_maps

DPI = 100
# kind -> (title, what a query row is, what a key column is)
DESCRIPTIONS = {
  "encoder_self": ("Encoder self-attention", "source token", "source token"),
  "decoder_self": ("Decoder self-attention (causal)", "target token predicted", "decoder input token"),
  "cross": ("Encoder-decoder (cross) attention", "target token predicted", "source token"),
  "self": ("Self-attention", "token", "token"),
}


def default_kind(config) -> str:
  """The attention drawn when none is asked for: cross-attention if the model has it, else self-attention."""
  kinds = attention_maps.family_kinds(config)
  return "cross" if "cross" in kinds else kinds[0]


def plot_attention(weights, query_labels, key_labels, title: str = "", *, query_name: str = "query",
                   key_name: str = "key") -> Figure:
  """A layers x heads grid of heatmaps of weights [layers, heads, q_len, k_len] with token tick labels.

  All panels share one colour scale (0 to 1); the token labels are on the outer axes only.
  """
  layers, heads, q_len, k_len = weights.shape
  panel = float(np.clip(0.17 * max(q_len, k_len), 1.4, 4.0))  # inches per panel
  fontsize = float(np.clip(0.8 * panel * 72 / max(q_len, k_len), 4.0, 9.0))  # points; one token per row
  fig = Figure(figsize=(heads * panel + 2.2, layers * panel + 1.6), layout="constrained")
  FigureCanvasAgg(fig)  # renders with Agg, whatever pyplot's backend is
  axes = fig.subplots(layers, heads, sharex=True, sharey=True, squeeze=False)
  for layer in range(layers):
    for head in range(heads):
      ax = axes[layer, head]
      image = ax.imshow(weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto",
                        interpolation="nearest")
      ax.set_xticks(range(k_len), key_labels, rotation=90, fontsize=fontsize)
      ax.set_yticks(range(q_len), query_labels, fontsize=fontsize)
      ax.tick_params(length=2, pad=1)
      if layer == 0:
        ax.set_title(f"head {head + 1}", fontsize=9)
      if head == 0:
        ax.set_ylabel(f"layer {layer + 1}", fontsize=9)
      ax.label_outer()
  fig.colorbar(image, ax=axes, shrink=min(1.0, 3.0 / layers), label="attention weight")
  fig.suptitle(title, fontsize=10)
  fig.supxlabel(key_name, fontsize=9)
  fig.supylabel(query_name, fontsize=9)
  return fig


def plot_map(kind: str, attention_map: attention_maps.AttentionMap) -> Figure:
  """The figure of one kind of attention, titled and with its axes named."""
  title, query_name, key_name = DESCRIPTIONS[kind]
  return plot_attention(attention_map.weights, attention_map.query_labels, attention_map.key_labels, title,
                        query_name=f"query: {query_name}", key_name=f"key: {key_name}")


def figure_to_array(fig: Figure, dpi: int = DPI) -> np.ndarray:
  """The rendered figure as RGB pixels, uint8 [height, width, 3]."""
  fig.set_dpi(dpi)
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def attention_image(graphdef, params, config, processor, text: str) -> np.ndarray:
  """RGB uint8 [H, W, 3] picture of the default kind of attention on `text` (e.g. for TensorBoard)."""
  kind = default_kind(config)
  attention_map = attention_maps.attention_weights(graphdef, params, config, processor, text)[kind]
  return figure_to_array(plot_map(kind, attention_map), dpi=80)
