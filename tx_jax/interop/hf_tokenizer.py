"""tx_jax's SentencePiece vocabulary as a Hugging Face fast tokenizer: tokenizer.json + tokenizer_config.json.

Built by hand from `tokenizers`' parts: its own SentencePieceUnigramTokenizer.from_spm needs a
protobuf module on sys.path, and transformers' converters need a slow tokenizer class per model.
The ids are SentencePiece's on every text but one that spells a special piece ("</s>", "[MASK]"),
which a Hugging Face tokenizer reads as that special token, as all of them do (the text after it
then starts a word), and one that spells a control or byte piece ("<0x41>", or "＜s＞" after NFKC)
with a character the vocabulary lacks; an unknown character decodes as <unk> (dropped with
skip_special_tokens), where SentencePiece writes " ⁇ ".
"""

import json
import os

from sentencepiece import sentencepiece_model_pb2  # protobuf comes with tensorflow-datasets
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from tx_jax import errors
from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.training import run_vocab

# {"bos_id": 3, ...}: the special ids of every SentencePiece model tx_jax reads (tokenizer_lib.load checks them)
OWN_VOCABULARY_IDS = {name: getattr(tokenizer_lib.Tokenizer, name) for name in run_vocab.SPECIAL_IDS}
UNIGRAM = 1  # sentencepiece_model_pb2.TrainerSpec.ModelType: the kind tx_jax trains
UNKNOWN, CONTROL, USER_DEFINED, BYTE = 2, 3, 4, 6  # ModelProto.SentencePiece.Type (USER_DEFINED: [MASK])
NEVER = -1e9  # the score of a piece no text is split into
ALL = 2 ** 31 - 1  # decoders.Strip's count: strips up to this many
# tokenizer_config.json's names of the tokenizer's special ids
TOKEN_NAMES = {"bos_id": "bos_token", "eos_id": "eos_token", "pad_id": "pad_token", "unk_id": "unk_token"}


def fast_tokenizer(model_proto: bytes, before: list, after: list) -> Tokenizer:
  """A tokenizers.Tokenizer with the unigram SentencePiece model's ids, adding the ids `before` and `after` a text."""
  model = sentencepiece_model_pb2.ModelProto()
  model.ParseFromString(model_proto)
  if model.trainer_spec.model_type != UNIGRAM:
    raise errors.ConfigError("the SentencePiece model is not a unigram model (tx_jax trains unigram ones); "
                             "export_hf converts only those to a Hugging Face tokenizer.")
  spec, fallback = model.normalizer_spec, model.trainer_spec.byte_fallback
  # SentencePiece never matches a control, unknown or byte piece in text (NFKC makes "＜s＞" "<s>"); here they lose
  # to any split without an unknown character (tokenizers scores those below its lowest piece, so no score can do more).
  vocab = [(p.piece, NEVER if p.type in (UNKNOWN, CONTROL, BYTE) else p.score) for p in model.pieces]
  tokenizer = Tokenizer(models.Unigram(vocab, model.trainer_spec.unk_id, fallback))
  steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
  if spec.remove_extra_whitespaces:  # SentencePiece strips spaces (only) at both ends and folds runs of them
    steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
  tokenizer.normalizer = normalizers.Sequence(steps)
  scheme = "always" if spec.add_dummy_prefix else "never"
  tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
  # Decoding: <0xE6><0x97>... pieces back to their character; then, as SentencePiece does after a dummy prefix,
  # every leading space off (a model may start its output with lone "▁" pieces).
  tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), *([decoders.ByteFallback()] if fallback else []),
                                         decoders.Fuse(), decoders.Strip(" ", ALL if spec.add_dummy_prefix else 0, 0)])
  tokenizer.add_special_tokens([AddedToken(p.piece, special=True, normalized=False)
                                for p in model.pieces if p.type in (UNKNOWN, CONTROL, USER_DEFINED)])
  piece = lambda i: model.pieces[i].piece
  single = " ".join([*map(piece, before), "$A", *map(piece, after)])
  tokenizer.post_processor = processors.TemplateProcessing(
    single=single, special_tokens=[(piece(i), i) for i in sorted(set(before) | set(after))])
  return tokenizer


def for_task(spm_path: str, task, max_length: int) -> tuple[Tokenizer, dict]:
  """(tokenizer.json's Tokenizer, tokenizer_config.json's dict) of the SentencePiece model at `spm_path`.

  The tokenizer adds the specials that `task`'s model reads around a text (Task.input_tokens:
  </s> after a source, <s> before a language model's text, [CLS] ... [SEP] to classify).
  """
  tokenizer = tokenizer_lib.Tokenizer(spm_path)
  text = -1  # stands for a text's ids
  around = task.input_tokens([text], tokenizer)
  before, after = around[:around.index(text)], around[around.index(text) + 1:]
  fast = fast_tokenizer(tokenizer.fingerprint(), before, after)
  ids = dict(OWN_VOCABULARY_IDS, unk_id=tokenizer.unk_id())
  names = {name: fast.id_to_token(ids[key]) for key, name in TOKEN_NAMES.items()}
  if tokenizer.piece_to_id("[MASK]") == tokenizer_lib.MASK_ID:  # a masked-LM or classification vocabulary
    names["mask_token"] = "[MASK]"
  settings = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              "clean_up_tokenization_spaces": False, **names,
              "model_input_names": ["input_ids", "attention_mask"]}  # no token types: tx_jax's models read none
  return fast, settings


def save(tokenizer: Tokenizer, settings: dict, out_dir: str) -> list:
  """Writes OUT_DIR/tokenizer.json and tokenizer_config.json; returns their names."""
  os.makedirs(out_dir, exist_ok=True)
  tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(settings, f, indent=2)
  return ["tokenizer.json", "tokenizer_config.json"]
