"""`CompareArgs`: the report stage's settings (`compare-models.py`, config.yaml's `compare:`). Light to
import: config.yaml is read against it. The stage is `exmed_bert.evaluation.report.run(args)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from exmed_bert.errors import UserError


@dataclass
class CompareArgs:
    """Compare models' test predictions: metrics with CIs, paired ΔAUROC, the oracle on the same test
    patients with each model's gap to it, plots."""

    yaml_section: ClassVar[Optional[str]] = "compare"

    runs: list[str] = field(default_factory=lambda: ["output/finetuned", "output/rf", "output/xgboost"], metadata={
        "help": "output folders of the models (each with metrics.json and predictions.csv), comma-separated"})
    metadata: Optional[str] = field(default="data/synthetic_patients.json", metadata={
        "help": "generator output or its .metadata.json: its whole-cohort oracle AUROC is shown as context "
                "only (skipped when absent)"})
    task_data: Optional[str] = field(default=None, metadata={
        "help": "the task CSV the runs used (recorded in the report); its <stem>_risk.csv is the first place "
                "looked for the true risks (default: the task CSV each run recorded)"})
    risk_file: Optional[str] = field(default=None, metadata={
        "help": "per-patient true risks (patient_id,true_risk) for the oracle on the test patients "
                "(default: <task stem>_risk.csv beside the task CSV; no oracle when there is none)"})
    output: str = field(default="output/report.md", metadata={"help": "report path; PNGs go beside it"})
    n_bootstrap: int = field(default=1000, metadata={"help": "paired bootstrap resamples"})
    seed: int = field(default=42, metadata={"help": "bootstrap seed"})

    def validate(self) -> None:
        if len(self.runs) < 1:
            raise UserError("--runs needs at least one output folder")
        if self.n_bootstrap < 1:
            raise UserError(f"--n-bootstrap must be at least 1, got {self.n_bootstrap}")
