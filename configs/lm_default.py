"""Default decoder-only LM: GPT-style, on the English side of the LibreOffice help (offline), CPU-sized."""

from configs import default


def get_config():
  """A 4-layer, d_model 256 causal LM; evaluation reports perplexity beside the unigram baseline."""
  config = default.get_config()
  config.task = "lm"
  config.source_language = ""
  config.target_language = "en"  # the LibreOffice help's English side (paired with German, split by page)
  config.vocab_size = 8000
  config.num_encoder_layers = 0
  config.num_decoder_layers = 4
  config.positions = "learned"
  config.activation = "gelu"
  config.scale_embeddings = False
  config.num_train_steps = 1500
  config.num_predict_sentences = 0  # nothing to decode for BLEU
  return config
