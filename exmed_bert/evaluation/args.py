"""`CompareArgs`: the report stage's settings (`compare-models.py`, config.yaml's `compare:`). Light to
import: config.yaml is read against it. The stage is `exmed_bert.evaluation.report.run(args)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from exmed_bert.errors import UserError


@dataclass
class CompareArgs:
    """Compare models' test predictions: metrics with CIs, paired ΔAUROC, the oracle on the same test
    patients with each model's gap to it, plots."""

    # None given means the models the pipeline trains by default, at their default output folders:
    # compare-models.py fills them in from `stages.default_runs()`, which reads the baselines' registry;
    # this module sits below it (the baselines write their metrics with evaluation.outputs).
    runs: list[str] = field(default_factory=list, metadata={
        "help": "output folders of the models (each with metrics.json and predictions.csv), comma-separated "
                "(none given: fine-tuning's and every default baseline's default --output-dir)"})
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
        if self.n_bootstrap < 1:
            raise UserError(f"--n-bootstrap must be at least 1, got {self.n_bootstrap}")
