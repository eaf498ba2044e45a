"""Transformer-big of "Attention Is All You Need" on TFDS WMT14 en->de."""

from configs import wmt_base


def get_config():
  """6+6 layers, d_model 1024, d_ff 4096, 16 heads, dropout 0.3 (the paper's en-de big model)."""
  config = wmt_base.get_config()
  config.emb_dim = 1024
  config.mlp_dim = 4096
  config.num_heads = 16
  config.dropout_rate = 0.3
  config.attention_dropout_rate = 0.3
  config.learning_rate = 1024 ** -0.5 * 4000 ** -0.5  # the paper's d^-0.5 * warmup^-0.5 peak
  config.num_train_steps = 300_000
  return config
