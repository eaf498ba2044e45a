"""Masked-LM pretraining (BERT): an encoder reads packed texts with 15 % of tokens masked 80/10/10."""

import jax
import jax.numpy as jnp

from tx_jax.data import tokenizer as tokenizer_lib
from tx_jax.tasks import base
from tx_jax.tasks import language_model
from tx_jax.tasks import translation
from tx_jax.training import evaluation
from tx_jax.training import losses

EVAL_MASK_SEED = 0  # evaluation masks the same positions every time, so MLM figures are comparable


def mask_tokens(tokens, key, *, vocab_size: int, mask_rate: float = 0.15):
  """BERT masking of tokens [batch, len]: returns (model inputs, selected [batch, len] bool).

  Each ordinary token is selected with probability `mask_rate`; a selected token becomes [MASK]
  80 % of the time, a random ordinary token 10 %, and stays itself 10 % (Devlin et al., 2019).
  Padding, EOS, BOS/[CLS] and [MASK] itself are never selected.
  """
  select_key, how_key, random_key = jax.random.split(key, 3)
  selected = jax.random.bernoulli(select_key, mask_rate, tokens.shape) & tokenizer_lib.maskable(tokens)
  how = jax.random.uniform(how_key, tokens.shape)
  random_tokens = jax.random.randint(random_key, tokens.shape, tokenizer_lib.FIRST_ORDINARY_ID, vocab_size)
  inputs = jnp.where(selected & (how < 0.8), tokenizer_lib.MASK_ID,
                     jnp.where(selected & (how < 0.9), random_tokens, tokens))
  return inputs.astype(tokens.dtype), selected


class MaskedLM(language_model.LanguageModel):
  """Masked-token prediction; shares its vocabulary (with [MASK]) with classification on the same corpus."""

  name = "mlm"
  family = "encoder_only"
  vocab_suffix = "_enc"
  with_mask = True
  needs_own_vocabulary = True  # masks with tokenizer.MASK_ID and draws random ids from FIRST_ORDINARY_ID on

  def metric_sums(self, model, batch, *, label_smoothing, deterministic, rng=None, mask_rate=0.15):
    rngs = base.dropout_rngs(deterministic, rng)
    key = jax.random.key(EVAL_MASK_SEED) if deterministic or rng is None else jax.random.fold_in(rng, 1)
    inputs, selected = mask_tokens(batch["targets"], key, vocab_size=model.cfg.vocab_size, mask_rate=mask_rate)
    logits = model(inputs, segments=batch["targets_segment_ids"], positions=batch["targets_positions"],
                   deterministic=deterministic, rngs=rngs)
    return losses.loss_sums(logits, batch["targets"], selected, label_smoothing)

  def forward_flops(self, cfg, batch):
    return translation.sequence_flops(cfg, batch, cfg.num_encoder_layers, head=True)

  def input_tokens(self, ids, tokenizer):
    return ids + [tokenizer.eos_id]

  def baselines(self, config, tokenizer, split, results):
    train = base.tokens_of(self.evaluated_examples(config, tokenizer, "train", limit=base.BASELINE_SAMPLE))
    evaluated = base.tokens_of(self.evaluated_examples(config, tokenizer, split))
    return {f"{split}/unigram_perplexity": evaluation.unigram_perplexity(train, evaluated, config.vocab_size,
                                                                         maskable_only=True),
            f"{split}/most_frequent_token_accuracy": evaluation.most_frequent_token_accuracy(train, evaluated)}

  def report(self, summary):
    m, p = summary["metrics"], summary["split"] + "/"
    return [f"masked-token accuracy {m[p + 'accuracy']:.4f}  masked-token perplexity {m[p + 'perplexity']:.2f}",
            f"baselines: always the most frequent token {m[p + 'most_frequent_token_accuracy']:.4f}, "
            f"unigram perplexity {m[p + 'unigram_perplexity']:.2f}"]
