"""BERT-base shape fine-tuned on TFDS glue/sst2 (binary sentiment): the published-scale classification run."""

from configs import bert_base, bert_cls_default


def get_config():
  """bert_base's encoder with a 2-way head; GLUE's test labels are hidden, so validation serves as test.

  Prepare once (downloads; needs TensorFlow and internet):
    pip install 'tx_jax[tfds]' && tfds build glue/sst2 --file_format=array_record --data_dir=DIR
  then --config.tfds_data_dir=DIR, and --config.init_from=WORKDIR of an MLM run of the same shape. The
  run reads the vocabulary that WORKDIR kept (WORKDIR/vocab.model), whose pieces its embeddings index;
  an MLM run from before runs kept theirs records none: pass its vocabulary as --config.vocab_path.
  """
  config = bert_cls_default.get_config()
  config.update(bert_base.MODEL)  # the model fields of BERT-base
  config.task = "classification"
  config.num_classes = 2
  config.dataset = "tfds"
  config.tfds_name = "glue/sst2"
  config.tfds_text_key = "sentence"
  config.tfds_label_key = "label"
  config.tfds_train_split = "train[:98%]"
  config.tfds_validation_split = "train[98%:]"
  config.tfds_test_split = "validation"
  config.vocab_size = 30522
  config.max_target_length = 128
  config.max_eval_target_length = 128
  config.per_device_batch_size = 32
  config.learning_rate = 2e-5  # BERT's fine-tuning recipe: 3 epochs at 2e-5 (67k sentences)
  config.warmup_steps = 600
  config.num_train_steps = 6300
  config.weight_decay = 0.01
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  return config
