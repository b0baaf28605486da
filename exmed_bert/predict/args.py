"""The settings of `predict-exmed-bert.py`: which fine-tuned model scores which split of which task.

Light to import (no torch): --help reads it. The stage is `exmed_bert.predict.scoring.run(args)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from exmed_bert.errors import UserError
from exmed_bert.training.args import DEVICES

# MEDS names its splits train / tuning / held_out; the conversion reads them as train / val / test
MEDS_SPLIT_NAMES = {"tuning": "val", "held_out": "test"}
SPLIT_CHOICES = ("test", "val", "train", "all", *MEDS_SPLIT_NAMES)


@dataclass
class PredictArgs:
    """Write a fine-tuned ExMed-BERT's predictions for one split of a task as MEDS predictions.parquet."""

    model_path: str = field(default="output/finetuned/checkpoint-best", metadata={
        "help": "fine-tuned model: the checkpoint-best folder of finetune-exmed-bert.py, or its output folder"})
    data_dir: str = field(default="pretrain_stuff", metadata={
        "help": "folder of the conversion the model was fine-tuned on; its task datasets are read (or built "
                "beside it from --task-data)"})
    task_data: str = field(default="data/task_specific.csv", metadata={
        "help": "task labels: MEDS label Parquet (a file or folder) or a CSV patient_id,label[,prediction_date]; "
                "each row scored is one prediction"})
    split: str = field(default="test", metadata={
        "help": "which rows to score: the conversion's test / val / train split (MEDS held_out / tuning / train), "
                "or all of them", "choices": list(SPLIT_CHOICES)})
    output: str = field(default="output/finetuned/predictions_test.parquet", metadata={
        "help": "predictions in the MEDS prediction schema (.parquet); task_rejected.csv goes beside it"})
    threshold: Optional[float] = field(default=None, metadata={
        "help": "probability at or above which predicted_boolean_value is true; unset: the threshold fine-tuning "
                "chose on val (metrics.json beside the model)"})
    max_length: Optional[int] = field(default=None, metadata={
        "help": "keep each history's most recent tokens up to this; unset: the fine-tuning run's --max-length "
                "(run_config.json beside the model), 512 when none is recorded"})
    batch_size: int = field(default=64, metadata={"help": "rows per forward pass"})
    device: str = field(default="auto", metadata={"help": "where to run the model", "choices": list(DEVICES)})

    def validate(self) -> None:
        if not self.output.lower().endswith(".parquet"):
            raise UserError(f"--output {self.output}: predictions are written as Parquet; give a .parquet path")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"--threshold must be a probability between 0 and 1, got {self.threshold}")
        if self.max_length is not None and self.max_length < 3:
            raise UserError(f"--max-length must be at least 3, got {self.max_length}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")

    @property
    def splits(self) -> tuple[str, ...]:
        """The conversion's split names this run scores, in the order their rows are written."""
        if self.split == "all":
            return ("train", "val", "test")
        return (MEDS_SPLIT_NAMES.get(self.split, self.split),)
