"""Baselines: sparse code features and RF / XGBoost through one shared runner (`runner.run(args)`)."""
