"""GPT-2 small (124M): 12 layers, d_model 768, 12 heads, learned positions, GELU, pre-LN, tied output."""

from configs import base


def get_config():
  """The published GPT-2 small shape: 124,439,808 parameters."""
  config = base.get_config()
  config.task = "lm"  # decoder-only
  config.vocab_size = 50257
  config.max_len = 1024
  config.emb_dim = 768
  config.num_heads = 12
  config.mlp_dim = 3072
  config.num_decoder_layers = 12
  config.num_encoder_layers = 0
  config.positions = "learned"
  config.norm = "layernorm"
  config.norm_position = "pre"
  config.norm_epsilon = 1e-5
  config.activation = "gelu"
  config.use_bias = True
  config.tie_output_embedding = True
  config.scale_embeddings = False
  config.dropout_rate = 0.1
  config.attention_dropout_rate = 0.1
  return config
