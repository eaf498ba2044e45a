"""Imported models' own tokenizers behind tx_jax's tokenizer interface (see tx_jax.data.tokenizer.Tokenizer).

tx_jax.import_hf copies a Hugging Face model's tokenizer files into WORKDIR/tokenizer/ and points
config.vocab_path there. Two kinds are read:
  - tokenizer.json (GPT-2, Llama, BERT, ...) with the `tokenizers` library;
  - Marian's source.spm / target.spm SentencePiece models with its vocab.json, whose ids are
    not SentencePiece's own: pieces are looked up in vocab.json, unknown ones become <unk>.
The special ids come from the imported config (bos_id, eos_id, pad_id), else from the usual
special tokens of the tokenizer. Both pickle as their paths, so Grain worker processes reload them.
"""

import json
import os

from tx_jax import errors
from tx_jax.data import tokenizer as tokenizer_lib

# Special-token spellings looked up when the config does not give an id (first found wins).
SPECIAL_TOKENS = {
  "bos_id": ("<s>", "[CLS]", "<|endoftext|>", "<|begin_of_text|>"),
  "eos_id": ("</s>", "[SEP]", "<|endoftext|>", "<|end_of_text|>"),
  "pad_id": ("<pad>", "[PAD]"),
}
MARIAN_FILES = ("source.spm", "target.spm", "vocab.json")


def is_tokenizer_dir(path: str) -> bool:
  """Whether `path` is a directory holding an imported tokenizer (tokenizer.json or Marian's files)."""
  return os.path.isdir(path) and (os.path.exists(os.path.join(path, "tokenizer.json"))
                                  or all(os.path.exists(os.path.join(path, n)) for n in MARIAN_FILES))


def load(path: str, config) -> "HFTokenizer | MarianTokenizer":
  """The imported tokenizer in directory `path`, with the special ids of `config` where it sets them."""
  ids = {k: config.get(k) for k in SPECIAL_TOKENS if config.get(k) is not None}
  if os.path.exists(os.path.join(path, "tokenizer.json")):
    return HFTokenizer(path, **ids)
  if all(os.path.exists(os.path.join(path, n)) for n in MARIAN_FILES):
    return MarianTokenizer(path, **ids)
  raise errors.DataError(f"config.vocab_path={path} is a directory without tokenizer.json or Marian's "
                         f"{', '.join(MARIAN_FILES)}; point it at a SentencePiece .model file or an imported "
                         "model's tokenizer/ directory.")


class _Imported:
  """What both imported kinds share: lazy loading, pickling as a path, special ids, detokenizing."""

  def __init__(self, path: str, **special_ids):
    self.path, self.special_ids, self._loaded = path, special_ids, None

  def __getstate__(self):
    return {"path": self.path, "special_ids": self.special_ids}

  def __setstate__(self, state):
    self.path, self.special_ids, self._loaded = state["path"], state["special_ids"], None

  @property
  def loaded(self):
    """The loaded tokenizer object(s) of this kind."""
    if self._loaded is None:
      self._loaded = self._load()
    return self._loaded

  def _special(self, name: str) -> int:
    if name in self.special_ids:
      return int(self.special_ids[name])
    for token in SPECIAL_TOKENS[name]:
      i = self.piece_to_id(token)
      if i is not None:
        return i
    if name == "pad_id":
      return self.eos_id  # GPT-2 and Llama have no padding token: HF pads with EOS
    raise errors.DataError(f"The tokenizer in {self.path} has none of the special tokens "
                           f"{', '.join(SPECIAL_TOKENS[name])} and the config sets no {name}; set --config.{name}.")

  @property
  def bos_id(self) -> int:
    """The id a decoder starts from (and the classifier's [CLS])."""
    return self._special("bos_id")

  @property
  def eos_id(self) -> int:
    """The id that ends a sequence (and the classifier's [SEP])."""
    return self._special("eos_id")

  @property
  def pad_id(self) -> int:
    """The padding id of unpacked batches."""
    return self._special("pad_id")

  def encode_target(self, text):
    """Token ids of a target-language string."""
    return self.encode(text)

  def detokenize(self, ids) -> str:
    """The text of ids, cut at the first EOS, padding and BOS left out."""
    eos = self.eos_id
    return self._decode(tokenizer_lib.content_ids(ids, eos_id=eos, skip={self.pad_id, self.bos_id} - {eos}))

  def decode(self, ids) -> str:
    """The text of ids as they are (no cut at EOS)."""
    return self._decode([int(i) for i in ids])

  def fingerprint(self) -> bytes:
    """Bytes that are equal exactly when two tokenizers are the same vocabulary (its files' contents)."""
    parts = []
    for name in sorted(os.listdir(self.path)):
      with open(os.path.join(self.path, name), "rb") as f:
        parts.append(name.encode() + b"\0" + f.read())
    return b"\0\0".join(parts)


class HFTokenizer(_Imported):
  """A tokenizer.json read with Hugging Face `tokenizers`; no special tokens are added on encoding."""

  def _load(self):
    try:
      import tokenizers  # pylint: disable=import-outside-toplevel  (an extra: pip install 'tx_jax[hf]')
    except ImportError:
      raise errors.DataError(f"{self.path}/tokenizer.json needs the `tokenizers` package: "
                             "pip install 'tx_jax[hf]'.") from None
    return tokenizers.Tokenizer.from_file(os.path.join(self.path, "tokenizer.json"))

  def encode(self, text):
    """Token ids of a string (or a list of id lists of a list of strings)."""
    if isinstance(text, str):
      return self.loaded.encode(text, add_special_tokens=False).ids
    return [e.ids for e in self.loaded.encode_batch(list(text), add_special_tokens=False)]

  def _decode(self, ids) -> str:
    return self.loaded.decode(ids, skip_special_tokens=True)

  def id_to_piece(self, i: int) -> str:
    """The token string of id `i`."""
    return self.loaded.id_to_token(int(i))

  def piece_to_id(self, piece: str):
    """The id of token string `piece`, or None."""
    return self.loaded.token_to_id(piece)


class MarianTokenizer(_Imported):
  """Marian's two SentencePiece models (source.spm, target.spm) with the shared vocab.json ids.

  As transformers' MarianTokenizer: a leading language code such as ">>fr<<" stays one token.
  (It also applies Moses punctuation normalisation when `sacremoses` is installed; this does not.)
  """

  def _load(self):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    with open(os.path.join(self.path, "vocab.json"), encoding="utf-8") as f:
      vocab = json.load(f)
    return {"source": spm.SentencePieceProcessor(model_file=os.path.join(self.path, "source.spm")),
            "target": spm.SentencePieceProcessor(model_file=os.path.join(self.path, "target.spm")),
            "vocab": vocab, "pieces": {int(i): p for p, i in vocab.items()}}

  def _ids(self, text: str, side: str) -> list:
    code = []
    if text.startswith(">>") and (end := text.find("<<")) != -1:
      code, text = [text[:end + 2]], text[end + 2:]
    vocab, unk = self.loaded["vocab"], self.loaded["vocab"].get("<unk>")
    return [vocab.get(p, unk) for p in code + self.loaded[side].encode(text, out_type=str)]

  def encode(self, text):
    """Source-side token ids of a string (or a list of id lists of a list of strings)."""
    return self._ids(text, "source") if isinstance(text, str) else [self._ids(t, "source") for t in text]

  def encode_target(self, text):
    """Target-side token ids of a string (target.spm's pieces, the same vocab.json ids)."""
    return self._ids(text, "target") if isinstance(text, str) else [self._ids(t, "target") for t in text]

  def _decode(self, ids) -> str:
    pieces = self.loaded["pieces"]
    text = self.loaded["target"].decode_pieces([pieces.get(i, "<unk>") for i in ids])
    return text.replace("\u2581", " ").strip()  # pieces target.spm lacks (shared vocab.json) keep their '▁

  def id_to_piece(self, i: int) -> str:
    """The piece of id `i` in vocab.json."""
    return self.loaded["pieces"].get(int(i), "<unk>")

  def piece_to_id(self, piece: str):
    """The vocab.json id of `piece`, or None."""
    return self.loaded["vocab"].get(piece)
