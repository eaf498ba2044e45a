"""A shared SentencePiece vocabulary, trained once on a sample of the training split and cached on disk."""

import os
import tempfile

import numpy as np
import sentencepiece as spm
from absl import logging

from tx_jax import errors

PAD_ID, EOS_ID, UNK_ID, BOS_ID = 0, 1, 2, 3  # BOS doubles as BERT's [CLS]
MASK_ID = 4  # [MASK], a user-defined piece of encoder (mlm/classification) vocabularies only
FIRST_ORDINARY_ID = 5  # in encoder vocabularies, the first id of a real piece


def train_or_load(path: str, texts, vocab_size: int, *, with_mask: bool = False,
                  max_sentences: int = 2_000_000) -> spm.SentencePieceProcessor:
  """Loads the SentencePiece model at `path`, training it on `texts` first if it is not there.

  `texts` is an iterable (or a callable returning one, called only when training is needed).
  `with_mask` reserves id MASK_ID for the [MASK] piece of masked-LM pretraining.
  """
  if not os.path.exists(path):
    texts = [t for t in (texts() if callable(texts) else texts) if t]
    if not texts:
      raise errors.DataError(f"No training text to train the vocabulary {path} on: the training split is empty or "
                             "every line was skipped (data_stats.json counts them by reason); check the corpus.")
    logging.info("Training a %d-piece SentencePiece vocabulary on %d sentences -> %s",
                 vocab_size, len(texts), path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path) or ".") as tmp:
      prefix = os.path.join(tmp, "spm")
      try:
        spm.SentencePieceTrainer.train(
          sentence_iterator=iter(texts), model_prefix=prefix, vocab_size=vocab_size,
          model_type="unigram", character_coverage=1.0, input_sentence_size=max_sentences,
          shuffle_input_sentence=True, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=BOS_ID,
          user_defined_symbols=["[MASK]"] if with_mask else [],
          num_threads=os.cpu_count() or 1, minloglevel=2)
      except RuntimeError as e:
        # SentencePiece says which way: fewer pieces than the text's characters need, or more than it holds.
        way = "raise" if "smaller than required_chars" in str(e) else "lower"
        raise errors.ConfigError(
          f"SentencePiece could not train a vocabulary of config.vocab_size={vocab_size} on "
          f"{len(texts)} sentences ({e}); {way} config.vocab_size.") from None
      os.replace(prefix + ".model", path)  # atomic: an interrupted run never leaves half a model
  processor = load(path)
  if with_mask and processor.piece_to_id("[MASK]") != MASK_ID:
    raise errors.DataError(f"The SentencePiece model {path} has no [MASK] piece at id {MASK_ID} (it was trained for "
                           "another task); delete it or set config.vocab_path to a new file.")
  return processor


class Tokenizer:
  """tx_jax's own SentencePiece vocabulary, named by its path and loaded on first use.

  The tokenizer interface every tool uses (tx_jax.data.hf_tokenizers has the imported ones):
  encode / encode_target (text -> ids, no specials added), detokenize (ids -> text, cut at EOS),
  id_to_piece, fingerprint, and the special ids bos_id, eos_id, pad_id. It pickles as its path,
  so data pipelines carry it into Grain worker processes; other attribute look-ups go to the
  loaded spm.SentencePieceProcessor.
  """

  bos_id, eos_id, pad_id = BOS_ID, EOS_ID, PAD_ID

  def __init__(self, path: str):
    self.path = path
    self._processor = None

  def encode(self, text, **kwargs):
    """Token ids of a string (or a list of id lists of a list of strings); kwargs go to SentencePiece's encode."""
    return self.processor.encode(text, **kwargs)

  def encode_target(self, text):
    """Token ids of a target-language string (one vocabulary serves both sides here)."""
    return self.processor.encode(text)

  def decode(self, ids) -> str:
    """The text of ids as they are (no cut at EOS)."""
    return self.processor.decode([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    """The piece of id `i`."""
    return self.processor.id_to_piece(int(i))

  def piece_to_id(self, piece: str) -> int:
    """The id of `piece` (UNK_ID when it is not in the vocabulary)."""
    return self.processor.piece_to_id(piece)

  def detokenize(self, ids) -> str:
    """The text of ids, cut at the first EOS, padding and BOS left out."""
    return decode(self.processor, ids)

  def fingerprint(self) -> bytes:
    """Bytes that are equal exactly when two tokenizers are the same vocabulary."""
    return self.processor.serialized_model_proto()

  @property
  def processor(self) -> spm.SentencePieceProcessor:
    """The loaded SentencePiece model."""
    if self._processor is None:
      self._processor = load(self.path)
    return self._processor

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return getattr(self.processor, name)

  def __getstate__(self):
    return {"path": self.path}

  def __setstate__(self, state):
    self.path, self._processor = state["path"], None


def sample_indices(num_records: int, max_records: int, seed: int = 0) -> np.ndarray:
  """A sorted uniform sample of at most `max_records` of range(num_records), without replacement."""
  if num_records <= max_records:
    return np.arange(num_records)
  return np.sort(np.random.default_rng(seed).choice(num_records, max_records, replace=False))


def maskable(tokens):
  """Which ids of an encoder vocabulary masked-LM pretraining may mask (numpy or jax arrays): real pieces and UNK."""
  return (tokens >= FIRST_ORDINARY_ID) | (tokens == UNK_ID)


def load(path: str) -> spm.SentencePieceProcessor:
  """The trained SentencePiece model at `path`, checked to use tx_jax's special ids."""
  if not os.path.exists(path):
    raise errors.DataError(f"The vocabulary {path} is missing; it is trained by the first "
                           "python -m tx_jax.train run of this dataset (or set config.vocab_path).")
  try:
    if os.path.isdir(path):  # checked here: sentencepiece 0.2.1 aborts the process on a directory
      raise IsADirectoryError(path)
    processor = spm.SentencePieceProcessor(model_file=path)
  except (RuntimeError, OSError) as e:  # a directory, a .vocab file, a truncated model
    raise errors.DataError(f"The vocabulary {path} is not a SentencePiece .model file ({type(e).__name__}); point "
                           "config.vocab_path at a .model file or an imported model's tokenizer/ directory, or "
                           "leave it empty to train one.") from None
  if processor.pad_id() != PAD_ID or processor.eos_id() != EOS_ID or processor.bos_id() != BOS_ID:
    raise errors.DataError(f"The SentencePiece model {path} uses other special ids than tx_jax "
                           f"(pad {PAD_ID}, eos {EOS_ID}, bos {BOS_ID}); delete it so it is retrained.")
  return processor


def content_ids(ids, *, eos_id: int = EOS_ID, skip=(PAD_ID, BOS_ID)) -> list:
  """The ids before the first `eos_id`, those in `skip` (padding, BOS) left out, as Python ints."""
  out = []
  for i in ids:
    i = int(i)
    if i == eos_id:
      break
    if i not in skip:
      out.append(i)
  return out


def decode(processor: spm.SentencePieceProcessor, ids) -> str:
  """Detokenizes ids, cutting at the first EOS and ignoring padding."""
  return processor.decode(content_ids(ids))
