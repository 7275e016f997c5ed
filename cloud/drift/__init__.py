"""Drift detection: recent feature distributions against each model's training reference."""
