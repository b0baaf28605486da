"""Training on the Hugging Face Trainer: shared flags and TrainingArguments (args), the Trainer subclass
(trainer), callbacks (best model, vocab, epoch), metrics, the training.log tee, MLflow tracking, and the
pretraining run (pretrain). Heavy imports stay inside the submodules."""
