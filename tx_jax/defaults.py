"""Every config field with its one default: every config starts from here (through configs/base.py).

It lives in the package so that an installed tx_jax has it too: tx_jax.import_hf writes an imported
model's workdir config from it. A field not set here does not exist: `--config.x=...` for an unknown
x stops with one line. The values are those of configs/default.py, the `make demo` run (a small
Transformer translating German -> English LibreOffice help on 2 CPU cores); the model fields left to
the model's defaults are tx_jax.models.config.ModelConfig's.
"""

import ml_collections
from ml_collections import config_dict


def get_config():
  """A ConfigDict holding every field tx_jax reads, each at its default."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = "translation"  # translation | lm | mlm | classification (tx_jax.tasks; it decides the model family)

  # Data.
  config.dataset = "libreoffice_help"  # libreoffice_help | text_files | tfds
  config.source_language = "de"
  config.target_language = "en"
  config.data_cache_dir = "~/.cache/tx_jax"  # fetched corpora and trained vocabularies
  config.compilation_cache = True  # compiled XLA programs kept in <data_cache_dir>/compilation_cache for later runs
  config.libreoffice_dir = ""  # already-extracted .deb contents, to skip the apt-get fetch
  config.data_dir = ""  # text_files: DIR/{train,validation,test}.{source,target}_language
  config.tfds_name = "wmt14_translate/de-en"
  config.tfds_data_dir = ""
  config.tfds_text_key = "text"  # language modelling: the feature holding the text
  config.tfds_train_split = ""  # TFDS split (or slice) read for each split; "" = the same name
  config.tfds_validation_split = ""
  config.tfds_test_split = ""
  config.tfds_label_key = "label"  # classification: the feature holding the label
  config.libreoffice_pair_language = "de"  # lm on English LibreOffice text: the side of the en-X pairs read
  config.vocab_path = ""  # default: <data_cache_dir>/vocab/<corpus key>[_<task kind>]_<vocab_size>.model
  config.vocab_size = 8000
  config.max_target_length = 128  # packed row length for training; longer pairs are dropped
  config.max_eval_target_length = 256
  config.max_predict_length = 256
  config.vocab_sample_sentences = 2_000_000  # the vocabulary is trained on a uniform sample of this many records
  config.data_shards = 0  # logical shards of the training data, fixed for a run; 0: one per process
  config.data_workers = -1  # Grain worker processes per shard tokenizing and packing; 0: none (a thread
  # prefetches either way); -1: none on a CPU backend, whose cores run the model, 2 on GPU/TPU hosts

  # Model.
  config.emb_dim = 256
  config.num_heads = 4
  config.num_kv_heads = 0  # 0: = num_heads (multi-head); 1: multi-query; between: grouped-query
  config.head_dim = 0  # 0: emb_dim // num_heads
  config.mlp_dim = 1024
  config.num_encoder_layers = 3
  config.num_decoder_layers = 3
  config.max_len = 512
  config.positions = "sinusoidal"  # sinusoidal | learned | rope | none
  config.sinusoidal_timescales = "tensor2tensor"  # tensor2tensor | marian (the frequency layout)
  config.rope_theta = 10000.0
  config.norm = "layernorm"  # layernorm | rmsnorm
  config.norm_position = "pre"  # pre | post
  config.norm_epsilon = 1e-6
  config.activation = "relu"  # relu | gelu (tanh form) | gelu_exact (erf) | silu | swiglu
  config.use_bias = True
  config.share_embeddings = True  # encoder-decoder: one token table for source and target
  config.tie_output_embedding = True  # output projection = the transposed token table
  config.output_bias = False  # a bias on the output logits (Marian, BERT's MLM head)
  config.logits_scale = 1.0
  config.scale_embeddings = True  # embeddings x sqrt(emb_dim), as in the paper
  config.num_token_types = 0  # > 0: BERT-style token type embeddings
  config.embedding_norm = False  # normalise the summed embeddings (BERT)
  config.final_norm = config_dict.placeholder(bool)  # a norm after the last block; None: only for pre-norm stacks
  config.pooler = False  # encoder-only: tanh dense layer over [CLS]
  config.mlm_head = False  # encoder-only: BERT's dense + activation + norm before the output projection
  config.num_classes = 0  # classification: the number of labels (>= 2)
  config.class_names = ()  # classification: a name per label (imported models carry them)
  config.pad_id = 0  # the padding token id the model masks
  config.attention_impl = "xla"  # xla | dot_product_attention (jax.nn; fused on GPU)
  config.remat = False  # older switch: True = remat_policy "full"
  # No dropout: in a ~2.5-epoch budget it only slows convergence (measured, experiments/README.md);
  # longer runs and configs/wmt_base.py use the paper's 0.1.
  config.dropout_rate = 0.0
  config.attention_dropout_rate = 0.0
  config.dtype = "float32"
  config.prng_impl = "threefry2x32"  # dropout's PRNG: threefry2x32 (same masks on any mesh) | rbg (cheaper)

  # Optimisation.
  config.per_device_batch_size = 8  # packed rows of max_target_length tokens per device
  config.num_train_steps = 2000  # ~14 min on 2 CPU cores
  config.train_minutes = 0.0  # > 0: stop (evaluate, save) once training steps have taken this long; 0: off
  config.learning_rate = 0.002
  config.warmup_steps = 300
  config.schedule = "rsqrt"  # rsqrt | cosine | constant
  config.label_smoothing = 0.1
  config.adam_b1 = 0.9
  config.adam_b2 = 0.98
  config.ema_decay = 0.0  # > 0 (e.g. 0.999): keep an EMA of the parameters; evaluation and decoding use it
  config.adam_eps = 1e-9
  config.weight_decay = 0.0  # > 0 switches Adam to AdamW
  config.cosine_final_fraction = 0.1  # schedule=cosine: the last learning rate as a fraction of the peak
  config.mlm_mask_rate = 0.15  # mlm: the share of tokens selected for masking (80/10/10)
  config.init_from = ""  # a workdir whose newest checkpoint initialises the parameters they share
  config.grad_clip_norm = 0.0  # > 0 clips gradients to this global norm

  # Parallelism and memory (README "Accelerators and clusters").
  config.parallelism = "jit"  # jit: one program over the mesh (data, fsdp, tensor); pmap: data parallel only
  config.mesh_shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = the remaining devices; pmap needs (-1, 1, 1)
  config.grad_accum_steps = 1  # microbatches per step; must divide per_device_batch_size (same update, less memory)
  config.remat_policy = "none"  # none | full | dots_saveable | dots_with_no_batch_dims_saveable | nothing_saveable
  config.scan_layers = False  # True: the blocks run as one lax.scan (compile time independent of depth)
  # Tasks that skip padding (translation, classification) compute every layer but attention on the non-padding
  # tokens only, in a share of each device's row slots (same result; tx_jax/training/padding_choice.py).
  # "auto" (one process): each batch gets the smallest share in sixteenths that holds its tokens, and the
  # padded step above 14/16 (tx_jax's packed translation rows), one compiled step per share that occurs; with
  # several processes the padded step. A number < 1 fixes the share (a fuller batch takes the padded step);
  # 1.0 always computes the padding. A number or "auto" (an object field, so both parse from the command line).
  config.token_capacity = config_dict.FieldReference("auto", field_type=object)

  # Loop, evaluation and checkpoints.
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.num_eval_steps = 20  # packed validation batches per evaluation (-1: all)
  config.num_predict_sentences = 100  # validation sentences decoded for eval/bleu during training (0: none, -1: all)
  config.attention_images = False  # True: eval also draws the first validation text's attention maps in TensorBoard
  config.log_batches = False  # True: WORKDIR/batches_process<i>.jsonl gets a SHA-1 of every training batch
  config.profile_steps = ()  # e.g. (20, 25): a JAX profiler trace of steps 20..25 in WORKDIR/tensorboard
  config.checkpoint_every_steps = 500
  config.max_checkpoints_to_keep = 3  # the newest N; keep-best ones come on top
  config.best_metric = ""  # e.g. "eval/bleu" or "eval/loss": every evaluation saves, the best keep_best stay
  config.best_mode = "auto"  # auto (min for loss/perplexity/ter/nll, else max) | min | max
  config.keep_best = 1
  config.early_stopping_patience = 0  # stop after this many evaluations without a new best (0: never)
  config.beam_size = 4
  config.length_penalty_alpha = 0.6
  config.eval_batch_size = 64  # sentences per decoding batch
  return config
