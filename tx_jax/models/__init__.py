"""Model building blocks and the Transformer families."""
