"""`train-rf.py` and `train-xgboost.py`: one command each, one shared runner; only the estimator differs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from exmed_bert.baselines import FEATURE_SETS
from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry


@dataclass
class _BaselineArgs:
    data_dir: str = field(default="pretrain_stuff", metadata={
        "help": "folder of a conversion (dataset_manifest.json, vocab.json); its task datasets "
                "<stem>_task_{train,val,test}.pt are built from --task-data when missing"})
    output_dir: str = field(default="output/rf", metadata={"help": "where metrics, predictions and plots go"})
    task_data: str = field(default="data/task_specific.csv", metadata={
        "help": "task CSV patient_id,label[,prediction_date]; checked against the task datasets"})
    num_labels: int = field(default=2, metadata={"help": "2 for a binary task; more for multi-class"})
    class_weights: str = field(default="none", metadata={
        "help": "weight classes by inverse frequency", "choices": ["none", "auto"]})
    on_task_error: str = field(default="skip", metadata={
        "help": "bad task CSV rows: skip them into task_rejected.csv, or stop", "choices": ["skip", "fail"]})
    features: str = field(default="counts", metadata={
        "help": "counts = how often each code occurs before the prediction date; windows = per code, the "
                "counts in the last 30/90/365 days and ever and the days since its last occurrence "
                "(both + age + sex)", "choices": list(FEATURE_SETS)})
    n_estimators: int = field(default=500, metadata={"help": "number of trees"})
    max_depth: Optional[int] = field(default=None, metadata={"help": "maximum tree depth (none: unlimited)"})
    n_jobs: int = field(default=-1, metadata={"help": "CPU threads (-1: all)"})
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% CIs"})
    seed: int = field(default=42, metadata={"help": "random seed (model and bootstrap)"})

    def validate(self) -> None:
        for name in ("n_estimators", "num_labels", "n_bootstrap"):
            if getattr(self, name) < (2 if name == "num_labels" else 1):
                raise UserError(f"--{name.replace('_', '-')} must be at least "
                                f"{2 if name == 'num_labels' else 1}, got {getattr(self, name)}")
        if self.max_depth is not None and self.max_depth < 1:
            raise UserError(f"--max-depth must be positive or none, got {self.max_depth}")


@dataclass
class RFArgs(_BaselineArgs):
    """Train a Random Forest on code counts (or time-windowed counts) + age + sex and score it on the test split."""

    yaml_section: ClassVar[str] = "rf"
    output_dir: str = field(default="output/rf", metadata={"help": "where metrics, predictions and plots go"})
    min_samples_leaf: int = field(default=5, metadata={"help": "minimum patients per leaf (larger: smoother probabilities)"})
    max_features: str = field(default="sqrt", metadata={
        "help": "features tried per split", "choices": ["sqrt", "log2", "all"]})


@dataclass
class XGBArgs(_BaselineArgs):
    """Train XGBoost on code counts (or time-windowed counts) + age + sex and score it on the test split."""

    yaml_section: ClassVar[str] = "xgboost"
    output_dir: str = field(default="output/xgboost", metadata={"help": "where metrics, predictions and plots go"})
    n_estimators: int = field(default=300, metadata={"help": "number of boosting rounds"})
    # depth 3 / eta 0.05: better validation AUROC than depth 6 / 0.1 on the generator's data (docs/EVALUATION.md)
    max_depth: Optional[int] = field(default=3, metadata={"help": "maximum tree depth"})
    learning_rate: float = field(default=0.05, metadata={"help": "boosting step size (eta)"})
    subsample: float = field(default=0.8, metadata={"help": "share of patients per tree"})
    colsample_bytree: float = field(default=0.8, metadata={"help": "share of features per tree"})


CONFIG_CLASSES = [RFArgs, XGBArgs]
_SHARED = {f.name for f in dataclasses.fields(_BaselineArgs)} - {"n_estimators", "max_depth", "n_jobs"}


def run(name: str, args: _BaselineArgs) -> int:
    from exmed_bert.baselines.runner import run_baseline
    from exmed_bert.evaluation.outputs import format_summary
    from exmed_bert.io import file_fingerprint, write_run_info
    from exmed_bert.tasks import load_task_splits

    splits, vocab, source = load_task_splits(
        args.data_dir, args.task_data, num_labels=args.num_labels, output_dir=args.output_dir,
        on_error=args.on_task_error)
    params = {k: v for k, v in dataclasses.asdict(args).items() if k not in _SHARED}
    if params.get("max_features") == "all":
        params["max_features"] = None
    data = {s: ds.data for s, ds in splits.items()}
    fingerprint = {s: file_fingerprint(ds.path) for s, ds in splits.items() if ds.path is not None}
    write_run_info(args.output_dir, args, extra={"data": source, "data_fingerprint": fingerprint})
    doc = run_baseline(name, data, vocab.tokens, params, args.output_dir, num_labels=args.num_labels,
                       class_weights=args.class_weights, n_bootstrap=args.n_bootstrap, seed=args.seed,
                       extra={"data": source}, features=args.features)
    print(format_summary(doc))
    print(f"wrote {args.output_dir}/metrics.json, predictions.csv and plots")
    return 0


@cli_entry
def main_rf(argv=None) -> int:
    return run("rf", parse_args(RFArgs, argv, prog="train-rf.py"))


@cli_entry
def main_xgboost(argv=None) -> int:
    return run("xgboost", parse_args(XGBArgs, argv, prog="train-xgboost.py"))
