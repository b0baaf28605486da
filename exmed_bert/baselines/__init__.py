"""Baselines: sparse code-count features and RF / XGBoost through one shared runner."""
