"""A small Llama-style decoder: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases, untied output."""

from configs import lm_default


def get_config():
  """8 layers, d_model 512, 8 query heads sharing 2 key/value heads; trains like lm_default."""
  config = lm_default.get_config()
  config.task = "lm"  # decoder-only
  config.vocab_size = 8000
  config.max_len = 1024
  config.emb_dim = 512
  config.num_heads = 8
  config.num_kv_heads = 2
  config.mlp_dim = 1408  # ~ 8/3 * d_model, as SwiGLU's three matrices keep the FFN size of a 4x MLP
  config.num_decoder_layers = 8
  config.num_encoder_layers = 0
  config.positions = "rope"
  config.rope_theta = 10000.0
  config.norm = "rmsnorm"
  config.norm_position = "pre"
  config.norm_epsilon = 1e-5
  config.activation = "swiglu"
  config.use_bias = False
  config.tie_output_embedding = False
  config.scale_embeddings = False
  config.dropout_rate = 0.0
  config.attention_dropout_rate = 0.0
  return config
