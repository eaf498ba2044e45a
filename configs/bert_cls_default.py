"""Default encoder-only sentiment classifier: Rotten Tomatoes fresh/rotten, optionally from an MLM checkpoint."""

from configs import bert_mlm_default


def get_config():
  """The bert_mlm_default encoder plus a pooler and a 2-way head over [CLS]; reports accuracy and macro-F1.

  Fine-tune a pretrained encoder with --config.init_from=WORKDIR_OF_bert_mlm_default.
  """
  config = bert_mlm_default.get_config()
  config.task = "classification"
  config.num_classes = 2  # rotten, fresh
  config.pooler = True
  config.max_target_length = 64  # [CLS] snippet [EOS]; longer snippets are cut
  config.max_eval_target_length = 64
  config.per_device_batch_size = 32  # snippets per device
  config.num_train_steps = 800
  config.learning_rate = 0.0003
  config.warmup_steps = 100
  config.dropout_rate = 0.1
  config.attention_dropout_rate = 0.1
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 400
  return config
