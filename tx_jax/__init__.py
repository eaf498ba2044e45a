"""tx_jax: encoder-only, decoder-only and encoder-decoder Transformers in JAX/Flax."""

__version__ = "0.1.0"
