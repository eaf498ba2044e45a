"""Inference-side utilities: scoring translations and comparing systems."""
