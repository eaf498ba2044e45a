"""Import and export of Hugging Face checkpoints (GPT-2, Llama, BERT, Marian)."""
