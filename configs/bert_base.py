"""BERT-base (110M): 12 layers, d_model 768, 12 heads, 512 learned positions, 2 token types, post-LN."""

from configs import base

# The published BERT-base encoder with its pooler (the model fields only; sst2_base.py takes them).
MODEL = dict(vocab_size=30522, max_len=512, emb_dim=768, num_heads=12, mlp_dim=3072, num_encoder_layers=12,
             num_decoder_layers=0, positions="learned", num_token_types=2, embedding_norm=True, norm="layernorm",
             norm_position="post", norm_epsilon=1e-12, activation="gelu", use_bias=True, pooler=True,
             tie_output_embedding=True, scale_embeddings=False, dropout_rate=0.1, attention_dropout_rate=0.1)


def get_config():
  """The published BERT-base encoder with its pooler: 109,482,240 parameters."""
  config = base.get_config()
  config.task = "mlm"  # encoder-only
  config.update(MODEL)
  return config
