"""Schedules, losses, train state and step, checkpoints and metrics."""
