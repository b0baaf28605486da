"""The baseline stages' settings: `BaselineArgs` (what every baseline shares: data, task, features,
bootstrap, seed) and one subclass per estimator with its own fields (`train-rf.py` / `train-xgboost.py` /
`train-logreg.py`, config.yaml's `rf:` / `xgboost:` / `logreg:`); `baselines.registry` ties each class
to its stage name. Light to import (no scikit-learn, scipy or xgboost): config.yaml is read against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional

from exmed_bert.errors import UserError

FEATURE_SETS = ("counts", "windows", "windows_order")  # `--features`: the featurisations of baselines/features.py
CLASS_WEIGHTS = ("none", "auto")
ON_TASK_ERROR = ("skip", "fail")


@dataclass
class BaselineArgs:
    """The settings every baseline shares; `baselines.runner.run(args)` is the stage for each subclass."""

    data_dir: str = field(default="pretrain_stuff", metadata={
        "help": "folder of a conversion (dataset_manifest.json, vocab.json); its task datasets "
                "<stem>_task_{train,val,test}.pt are built from --task-data when missing"})
    output_dir: str = field(default="output/baseline", metadata={"help": "where metrics, predictions and plots go"})
    task_data: str = field(default="data/task_specific.csv", metadata={
        "help": "task CSV patient_id,label[,prediction_date], or MEDS label Parquet (file or folder); checked against the task datasets"})
    num_labels: int = field(default=2, metadata={"help": "2 for a binary task; more for multi-class"})
    class_weights: str = field(default="none", metadata={
        "help": "weight classes by inverse frequency", "choices": list(CLASS_WEIGHTS)})
    on_task_error: str = field(default="skip", metadata={
        "help": "bad task CSV rows: skip them into task_rejected.csv, or stop", "choices": list(ON_TASK_ERROR)})
    features: str = field(default="counts", metadata={
        "help": "counts = how often each code occurs before the prediction date; windows = per code, the "
                "counts in the last 30/90/365 days and ever and the days since its last occurrence; "
                "windows_order = windows + days since each code's first occurrence + the order of the 32 most "
                "frequent drugs relative to the 32 most frequent diagnoses (all + age + sex)",
                "choices": list(FEATURE_SETS)})
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% CIs"})
    seed: int = field(default=42, metadata={"help": "random seed (model and bootstrap)"})

    def validate(self) -> None:
        if self.num_labels < 2:
            raise UserError(f"--num-labels must be at least 2, got {self.num_labels}")
        if self.n_bootstrap < 1:
            raise UserError(f"--n-bootstrap must be at least 1, got {self.n_bootstrap}")

    def estimator_params(self) -> dict:
        """The estimator's own settings: the fields a subclass adds (recorded in metrics.json as `params`)."""
        shared = {f.name for f in fields(BaselineArgs)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in shared}


@dataclass
class TreeArgs(BaselineArgs):
    """What the tree ensembles share: how many trees, how deep, on how many threads."""

    n_estimators: int = field(default=500, metadata={"help": "number of trees"})
    max_depth: Optional[int] = field(default=None, metadata={"help": "maximum tree depth (none: unlimited)"})
    n_jobs: int = field(default=-1, metadata={"help": "CPU threads (-1: all)"})

    def validate(self) -> None:
        super().validate()
        if self.n_estimators < 1:
            raise UserError(f"--n-estimators must be at least 1, got {self.n_estimators}")
        if self.max_depth is not None and self.max_depth < 1:
            raise UserError(f"--max-depth must be positive or none, got {self.max_depth}")


@dataclass
class RFArgs(TreeArgs):
    """Train a Random Forest on code counts (or time-windowed counts) + age + sex and score it on the test split."""

    output_dir: str = field(default="output/rf", metadata={"help": "where metrics, predictions and plots go"})
    min_samples_leaf: int = field(default=5, metadata={
        "help": "minimum patients per leaf (larger: smoother probabilities)"})
    max_features: str = field(default="sqrt", metadata={
        "help": "features tried per split", "choices": ["sqrt", "log2", "all"]})


@dataclass
class XGBArgs(TreeArgs):
    """Train XGBoost on code counts (or time-windowed counts) + age + sex and score it on the test split."""

    output_dir: str = field(default="output/xgboost", metadata={"help": "where metrics, predictions and plots go"})
    n_estimators: int = field(default=300, metadata={"help": "number of boosting rounds"})
    # depth 3 / eta 0.05: better validation AUROC than depth 6 / 0.1 on the generator's data (docs/EVALUATION.md)
    max_depth: Optional[int] = field(default=3, metadata={"help": "maximum tree depth"})
    learning_rate: float = field(default=0.05, metadata={"help": "boosting step size (eta)"})
    subsample: float = field(default=0.8, metadata={"help": "share of patients per tree"})
    colsample_bytree: float = field(default=0.8, metadata={"help": "share of features per tree"})


@dataclass
class LogRegArgs(BaselineArgs):
    """Train an L2-regularised logistic regression on code counts (or time-windowed counts) + age + sex, each
    column log1p-transformed and scaled by its largest train value, and score it on the test split."""

    output_dir: str = field(default="output/logreg", metadata={"help": "where metrics, predictions and plots go"})
    C: float = field(default=1.0, metadata={
        "help": "inverse L2 regularisation strength (smaller: simpler model; scikit-learn's C)"})
    max_iter: int = field(default=1000, metadata={"help": "most solver (L-BFGS) iterations"})

    def validate(self) -> None:
        super().validate()
        if not self.C > 0:
            raise UserError(f"--C must be positive, got {self.C}")
        if self.max_iter < 1:
            raise UserError(f"--max-iter must be at least 1, got {self.max_iter}")
