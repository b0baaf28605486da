"""Baselines: sparse code features and RF / XGBoost through one shared runner."""

# The featurisations (`--features`), defined here so the command line knows them without importing scipy.
FEATURE_SETS = ("counts", "windows")
