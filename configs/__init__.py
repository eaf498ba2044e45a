"""Experiment configs: plain Python files with get_config()."""
