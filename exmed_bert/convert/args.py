"""`ConvertArgs`: the conversion stage's settings (`convert_synthetic_to_dataset.py`, config.yaml's top level).

Light to import (no torch): config.yaml is read against it. The stage is
`exmed_bert.convert.conversion.run(args)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from exmed_bert.data.splits import DEFAULT_SEED, DEFAULT_TRAIN_RATIO, SPLITS
from exmed_bert.errors import UserError

SPLIT_SOURCES = ("auto", "meds", "hash")  # where a patient's split comes from (--split-source)
ON_ERROR = ("skip", "fail")
OTHER_CODES = ("drop", "keep")   # --other-codes (exmed_bert.convert.validate holds the same tuple)
# fields that change no byte of the datasets: where the input, the task rows (checked by their fingerprint)
# and the outputs are, how many processes convert, and whether a bad task row stops the conversion: task
# datasets are reused across them
NOT_IN_DATA = ("input", "output", "task_data", "workers", "on_task_error")


@dataclass
class ConvertArgs:
    """Convert patient records to encoded PyTorch datasets (train/val/test), vocab.json and a manifest."""

    input: str = field(default="data/synthetic_patients.json", metadata={
        "help": "patients as JSON ({\"patients\": [...]}), JSONL, or a MEDS folder of Parquet files"})
    output: str = field(default="pretrain_stuff/synthetic.pt", metadata={
        "help": "output path; writes <stem>_train.pt, <stem>_val.pt, <stem>_test.pt, vocab.json beside it"})
    split: str = field(default="all", metadata={"help": "which split to write", "choices": ["all", *SPLITS]})
    max_length: int = field(default=512, metadata={
        "help": "maximum tokens per patient; older visits are dropped first"})
    train_ratio: float = field(default=DEFAULT_TRAIN_RATIO, metadata={
        "help": "share of patients in train; the rest is split evenly between val and test"})
    seed: int = field(default=DEFAULT_SEED, metadata={"help": "seed of the patient-id hash that assigns splits"})
    split_source: str = field(default="auto", metadata={
        "help": "where splits come from: meds = a MEDS dataset's metadata/subject_splits.parquet (train -> "
                "train, tuning -> val, held_out -> test; subjects in other splits are left out), hash = the "
                "seeded patient-id hash, auto = meds when that file exists, else hash",
        "choices": list(SPLIT_SOURCES)})
    min_code_count: int = field(default=1, metadata={
        "help": "codes seen fewer times in the training split become [UNK]"})
    task_data: Optional[str] = field(default=None, metadata={
        "help": "task labels: a CSV patient_id,label[,prediction_date] or MEDS label Parquet (a file or folder: "
                "subject_id, prediction_time, boolean_value / integer_value / categorical_value); also writes "
                "<stem>_task_{train,val,test}.pt, one row per label row whose subject is converted, cut at its "
                "prediction time (MEDS labels: events at or before it) or before its prediction_date (CSV)"})
    on_task_error: str = field(default="skip", metadata={
        "help": "bad task rows (a null label, a repeated prediction_time, ...): skip them into task_rejected.csv "
                "beside the output, counted in the manifest, as fine-tuning and the baselines do; or fail on the first",
        "choices": list(ON_ERROR)})
    on_error: str = field(default="skip", metadata={
        "help": "bad records: skip them (listed in <stem>_rejected.jsonl) or fail on the first",
        "choices": list(ON_ERROR)})

    other_codes: str = field(default="drop", metadata={
        "help": "codes of no known system (labs, SNOMED, LOINC, MEDICATION//<name>...): drop = leave them out "
                "(counted per family in the manifest's ignored_codes), keep = tokens 'other:<family>//<code>' "
                "with their own token type (4); see docs/DATASET.md, 'Other codes'",
        "choices": list(OTHER_CODES)})
    value_bins: int = field(default=0, metadata={
        "help": "with --other-codes keep and MEDS input: bin each other code's numeric_value into N quantile bins "
                "learned on the train split (token 'other:LAB//50912//mg/dL|q3'); 0 = off"})

    workers: Optional[int] = field(default=None, metadata={
        "help": "processes converting MEDS shards or JSONL blocks in parallel (default: every CPU for inputs "
                "of 16 MB or more, else 1; JSONL on 2 CPUs or fewer: 1); the output is byte-identical for "
                "any number"})

    def validate(self) -> None:
        if not 0.0 < self.train_ratio < 1.0:
            raise UserError(f"--train-ratio must be between 0 and 1 (exclusive), got {self.train_ratio}")
        if self.max_length < 3:
            raise UserError(f"--max-length must be at least 3 ([CLS], one code, [SEP]), got {self.max_length}")
        if self.min_code_count < 1:
            raise UserError(f"--min-code-count must be at least 1, got {self.min_code_count}")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers must be at least 1, got {self.workers}")
        if self.value_bins < 0 or self.value_bins == 1:
            raise UserError(f"--value-bins must be 0 (off) or at least 2, got {self.value_bins}")
        if self.value_bins and self.other_codes != "keep":
            raise UserError(f"--value-bins {self.value_bins} bins the values of other codes; add --other-codes keep "
                            "(or leave --value-bins at 0)")
        for flag, value, choices in (("--on-error", self.on_error, ON_ERROR), ("--on-task-error", self.on_task_error,
                                     ON_ERROR), ("--other-codes", self.other_codes,
                                     OTHER_CODES), ("--split-source", self.split_source, SPLIT_SOURCES)):
            if value not in choices:
                raise UserError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
