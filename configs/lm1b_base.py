"""A GPT-style decoder LM on TFDS lm1b (One Billion Word Benchmark)."""

from configs import lm_default


def get_config():
  """6 layers, d_model 512, 8 heads, 32k vocabulary; lm1b has no validation split, so half of test serves.

  Prepare once (downloads; needs TensorFlow and internet):
    pip install 'tx_jax[tfds]' && tfds build lm1b --file_format=array_record --data_dir=DIR
  """
  config = lm_default.get_config()
  config.dataset = "tfds"
  config.tfds_name = "lm1b"
  config.tfds_text_key = "text"
  config.tfds_validation_split = "test[:50%]"
  config.tfds_test_split = "test[50%:]"
  config.vocab_size = 32000
  config.max_target_length = 256
  config.max_eval_target_length = 256
  config.emb_dim = 512
  config.num_heads = 8
  config.mlp_dim = 2048
  config.num_decoder_layers = 6
  config.dropout_rate = 0.1
  config.attention_dropout_rate = 0.1
  config.per_device_batch_size = 32
  config.learning_rate = 0.0016
  config.warmup_steps = 1000
  config.num_train_steps = 100_000
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  return config
