"""Inference: parameter-only restore, decoding, attention maps, and scoring translations."""
