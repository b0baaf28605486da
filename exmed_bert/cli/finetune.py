"""`finetune-exmed-bert.py`: fine-tune a pretrained ExMed-BERT on a task CSV; report test metrics."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry
from exmed_bert.training.args import TrainingCommonArgs

METRICS = ["f1", "auroc", "auprc", "loss"]


@dataclass
class Args(TrainingCommonArgs):
    """Fine-tune ExMed-BERT on a labelled task: train on train, select on val, report on test."""

    yaml_section: ClassVar[Optional[str]] = "finetune"

    model_path: str = field(default="output/with_clinvec/checkpoint-best", metadata={
        "help": "pretrained model folder (config.json, model.safetensors, vocab.json), or the pretraining "
                "run folder holding checkpoint-best"})
    task_data: str = field(default="data/task_specific.csv", metadata={
        "help": "task CSV patient_id,label[,prediction_date]; histories are cut before the prediction date"})
    output_dir: str = field(default="output/finetuned", metadata={
        "help": "checkpoints, TensorBoard logs, checkpoint-best/, metrics.json, predictions.csv, plots"})
    data_dir: str = field(default="pretrain_stuff", metadata={
        "help": "folder of the conversion the model was pretrained on; task datasets are built beside it"})
    input: str = field(default="data/synthetic_patients.json", metadata={
        "help": "patients JSON/JSONL, encoded with the model's vocabulary when --data-dir has no conversion"})
    split_seed: Optional[int] = field(default=None, metadata={
        "help": "seed of the patient-id hash that assigns train/val/test, separate from --seed (training); "
                "unset: the split of record, i.e. the --seed of the conversion in --data-dir or, when --input is "
                "encoded here, of the conversion the model was pretrained on; 42 when neither is known"})
    train_ratio: Optional[float] = field(default=None, metadata={
        "help": "share of patients in train (the rest is halved into val and test); unset: the conversion's "
                "--train-ratio as for --split-seed, 0.8 when none is known"})
    num_labels: int = field(default=2, metadata={"help": "2 for a binary task; more for multi-class"})
    metric_for_best_model: str = field(default="auroc", metadata={
        "help": "validation metric that picks checkpoint-best", "choices": METRICS})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate (AdamW, linear decay)"})
    num_epochs: float = field(default=10.0, metadata={"help": "passes over the training patients"})
    batch_size: int = field(default=16, metadata={"help": "patients per batch and per device"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate on val every N updates (0: once per epoch)"})
    save_steps: int = field(default=0, metadata={"help": "write checkpoint-N every N updates (0: once per epoch)"})
    logging_steps: int = field(default=10, metadata={"help": "log the training loss every N updates"})
    early_stopping_patience: int = field(default=3, metadata={
        "help": "stop after this many evaluations without improvement (0: never)"})
    class_weights: str = field(default="none", metadata={
        "help": "weight the loss by inverse class frequency", "choices": ["none", "auto"]})
    freeze_encoder_epochs: int = field(default=0, metadata={
        "help": "train only the classifier head for this many epochs first"})
    max_length: int = field(default=512, metadata={"help": "keep each patient's most recent tokens up to this"})
    on_task_error: str = field(default="skip", metadata={
        "help": "bad task CSV rows: skip them into task_rejected.csv, or stop", "choices": ["skip", "fail"]})
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% CIs"})

    def validate(self) -> None:
        # 0 steps means "per epoch" here; the shared checks want positive numbers
        dataclasses.replace(self, eval_steps=max(self.eval_steps, 1),
                            save_steps=max(self.save_steps, 1)).validate_common()
        if self.eval_steps < 0 or self.save_steps < 0:
            raise UserError("--eval-steps and --save-steps must be 0 (per epoch) or positive")
        if self.num_labels < 2:
            raise UserError(f"--num-labels must be at least 2 (2 = binary), got {self.num_labels}")
        if self.max_length < 3:
            raise UserError(f"--max-length must be at least 3, got {self.max_length}")
        if self.early_stopping_patience < 0 or self.freeze_encoder_epochs < 0:
            raise UserError("--early-stopping-patience and --freeze-encoder-epochs must be 0 or more")
        if self.train_ratio is not None and not 0.0 < self.train_ratio < 1.0:
            raise UserError(f"--train-ratio must be between 0 and 1 (exclusive), got {self.train_ratio}")
        if self.n_bootstrap < 1:
            raise UserError(f"--n-bootstrap must be at least 1, got {self.n_bootstrap}")


@cli_entry
def main(argv=None, prog: str = "finetune-exmed-bert.py") -> int:
    args = parse_args(Args, argv, prog=prog)
    from exmed_bert.training.finetune import run_finetuning

    run_finetuning(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
