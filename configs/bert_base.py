"""BERT-base (110M): 12 layers, d_model 768, 12 heads, 512 learned positions, 2 token types, post-LN."""

import ml_collections


def get_config():
  """The published BERT-base encoder with its pooler: 109,482,240 parameters."""
  config = ml_collections.ConfigDict()
  config.task = "mlm"  # encoder-only
  config.vocab_size = 30522
  config.max_len = 512
  config.emb_dim = 768
  config.num_heads = 12
  config.mlp_dim = 3072
  config.num_encoder_layers = 12
  config.num_decoder_layers = 0
  config.positions = "learned"
  config.num_token_types = 2
  config.embedding_norm = True
  config.norm = "layernorm"
  config.norm_position = "post"
  config.norm_epsilon = 1e-12
  config.activation = "gelu"
  config.use_bias = True
  config.pooler = True
  config.tie_output_embedding = True
  config.scale_embeddings = False
  config.dropout_rate = 0.1
  config.attention_dropout_rate = 0.1
  return config
