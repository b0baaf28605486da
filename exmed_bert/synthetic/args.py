"""`GenerateArgs`: the generator stage's settings (`generate_synthetic_patients.py`, config.yaml's top level).

Light to import (no numpy work, no torch): config.yaml is read against it. The stage is
`exmed_bert.synthetic.cohort.run(args)`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from exmed_bert.data.splits import DEFAULT_TRAIN_RATIO
from exmed_bert.errors import UserError
from exmed_bert.synthetic.task import TASKS

FORMATS = ("json", "meds")   # --format: the guide's JSON/JSONL, or a MEDS root (synthetic/meds_root.py)


@dataclass
class GenerateArgs:
    """Generate synthetic patients (ICD-10-CM diagnoses, ATC drugs, CPT procedures, hospital stays) with a
    planted heart-failure-hospitalisation task. See docs/SYNTHETIC_DATA_GUIDE.md."""

    num_patients: int = field(default=1000, metadata={"help": "number of patients", "aliases": ["-n"]})
    novel_prob: float = field(default=0.01, metadata={
        "help": "share of diagnosis and drug codes replaced by real codes absent from the embedding "
                "vocabulary (novel codes), 0..1"})
    output: str = field(default="data/synthetic_patients.json", metadata={
        "help": "patients file; a .jsonl suffix writes one patient per line and <stem>.metadata.json"})
    seed: int = field(default=42, metadata={"help": "random seed; same arguments + seed = byte-identical files"})
    clinvec_dir: Optional[str] = field(default=None, metadata={
        "help": "ClinVec release whose codes form the embedding vocabulary for novel codes "
                "(default: the project's demo embedding set)"})
    start_date: str = field(default="2020-01-01", metadata={"help": "first day of the history window (YYYY-MM-DD)"})
    end_date: str = field(default="2024-12-31", metadata={"help": "last day of the history window (YYYY-MM-DD)"})
    task_output: str = field(default="data/task_specific.csv", metadata={
        "help": "task labels CSV: patient_id,label,prediction_date; each patient's true risk goes to "
                "<stem>_risk.csv beside it (patient_id,true_risk), for the report's oracle only"})
    task: str = field(default="hf", metadata={
        "help": "the planted task: hf = heart-failure risk almost additive in which codes a history holds; "
                "temporal = the same outcome with a risk carried by order and timing (recent episodes, "
                "treatment started after its diagnosis, a run of admissions); trajectory = latent disease processes "
                "(onset, progression stages, treatment response) drive a wide, long-tailed code space and the "
                "risk; see docs/SYNTHETIC_DATA_GUIDE.md",
        "choices": list(TASKS)})
    task_horizon_days: int = field(default=365, metadata={
        "help": "the outcome counts if it happens within this many days after the prediction date"})
    task_prevalence: Optional[float] = field(default=None, metadata={
        "help": "--task trajectory only: the share of positive labels its risk's intercept is calibrated to "
                "(default 0.10; 0.03 for a rare outcome); hf and temporal keep their documented intercepts"})
    format: str = field(default="json", metadata={
        "help": "json = --output as JSON (JSONL with a .jsonl suffix) and the task CSV at --task-output; meds = "
                "--output is a folder written as a MEDS root (data/<split>/<n>.parquet, metadata/, the task as MEDS "
                "labels in task_labels/<task>/ and the true risks in task_labels/<task>_risk.csv; --task-output is "
                "not written). Splits are the converter's for --seed and --train-ratio; see "
                "docs/SYNTHETIC_DATA_GUIDE.md, 'MEDS output'", "choices": list(FORMATS)})
    train_ratio: float = field(default=DEFAULT_TRAIN_RATIO, metadata={
        "help": "with --format meds: share of subjects in the train split (the rest halved between tuning and "
                "held_out), as the converter's --train-ratio"})

    def validate(self) -> None:
        if self.num_patients < 1:
            raise UserError(f"--num-patients must be at least 1, got {self.num_patients}")
        if self.task_prevalence is not None:
            if self.task != "trajectory":
                raise UserError(f"--task-prevalence applies to --task trajectory only (got --task {self.task}, "
                                "whose risk has a fixed, documented intercept)")
            if not 0.001 <= self.task_prevalence <= 0.5:
                raise UserError(f"--task-prevalence must be between 0.001 and 0.5, got {self.task_prevalence}")
        if not 0.0 <= self.novel_prob <= 1.0:
            raise UserError(f"--novel-prob must be a probability between 0 and 1, got {self.novel_prob}")
        if self.seed < 0:
            raise UserError(f"--seed must be a non-negative integer, got {self.seed}")
        start, end = _date("--start-date", self.start_date), _date("--end-date", self.end_date)
        if self.task_horizon_days < 1:
            raise UserError(f"--task-horizon-days must be at least 1, got {self.task_horizon_days}")
        days = (end - start).days + 1
        if days < self.task_horizon_days + 365:
            raise UserError(f"the history window {self.start_date}..{self.end_date} ({days} days) must span at "
                            f"least --task-horizon-days + 365 = {self.task_horizon_days + 365} days; "
                            "move --start-date earlier")
        if self.format not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not 0.0 < self.train_ratio < 1.0:
            raise UserError(f"--train-ratio must be between 0 and 1 (exclusive), got {self.train_ratio}")
        if self.format == "meds" and Path(self.output).suffix.lower() in (".json", ".jsonl"):
            raise UserError(f"--format meds writes a folder (a MEDS root), but --output is {self.output}; give a "
                            "folder such as --output data/synthetic_meds")
        if Path(self.output).resolve() == Path(self.task_output).resolve():
            raise UserError(f"--output and --task-output are the same file ({self.output}); give two paths")


def _date(flag: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{flag} must be a date as YYYY-MM-DD, got {value!r}") from None
