"""Predictions of a fine-tuned ExMed-BERT for one split of a task, in the MEDS prediction schema:
`args.PredictArgs` (`predict-exmed-bert.py`) and `scoring.run(args)`."""
