"""Evaluation: metrics with bootstrap CIs, per-run outputs, plots and the comparison report."""
