"""Evaluation: metrics with bootstrap CIs, plots, model outputs and the comparison report (`report.run(args)`)."""
