"""Data sources, tokenizer and the batching pipeline."""
