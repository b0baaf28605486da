"""Training on the Hugging Face Trainer: the stages' typed settings (args), where they meet the machine
(runtime: device, precision, TrainingArguments), the Trainer subclass (trainer), callbacks, metrics, the
training.log tee, MLflow tracking, and the two runs: pretrain.run(args) and finetune.run(args)."""
