"""Transformer-base of "Attention Is All You Need" on TFDS WMT14 (en->de by default)."""

from configs import default


def get_config():
  """6+6 layers, d_model 512, d_ff 2048, 8 heads, shared ~32k SentencePiece vocabulary.

  Needs the TFDS dataset prepared once (it downloads from the web):
    pip install 'tx_jax[tfds]'
    tfds build wmt14_translate/de-en --file_format=array_record --data_dir=DIR
  then: python -m tx_jax.train --config=configs/wmt_base.py --config.tfds_data_dir=DIR --workdir=...
  """
  config = default.get_config()
  config.dataset = "tfds"
  config.tfds_name = "wmt14_translate/de-en"
  config.source_language = "en"
  config.target_language = "de"
  config.vocab_size = 32000
  config.max_target_length = 256
  config.max_eval_target_length = 256
  config.max_predict_length = 256

  config.emb_dim = 512
  config.num_heads = 8
  config.mlp_dim = 2048
  config.num_encoder_layers = 6
  config.num_decoder_layers = 6
  config.dropout_rate = 0.1
  config.attention_dropout_rate = 0.1
  config.label_smoothing = 0.1

  config.per_device_batch_size = 32  # packed rows of 256 tokens: ~8k source + 8k target tokens/device
  config.learning_rate = 512 ** -0.5 * 4000 ** -0.5  # ~7e-4: the paper's d^-0.5 * warmup^-0.5 peak
  config.warmup_steps = 4000
  config.num_train_steps = 100_000
  config.eval_every_steps = 5000
  config.num_eval_steps = 100
  config.num_predict_sentences = 1000
  config.checkpoint_every_steps = 5000
  config.log_every_steps = 100
  return config
