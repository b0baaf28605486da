"""`compare-models.py`: one report comparing fine-tuned ExMed-BERT, RF and XGBoost on the same test patients."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry


@dataclass
class Args:
    """Compare models' test predictions: metrics with CIs, paired ΔAUROC, the oracle on the same test
    patients with each model's gap to it, plots."""

    yaml_section: ClassVar[Optional[str]] = "compare"

    runs: list[str] = field(default_factory=lambda: ["output/finetuned", "output/rf", "output/xgboost"], metadata={
        "help": "output folders of the models (each with metrics.json and predictions.csv), comma-separated",
        "aliases": []})
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


def _split_runs(argv: list[str]) -> list[str]:
    """Let `--runs a b c` (the guide's form) mean `--runs a,b,c`."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == "--runs":
            vals = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                vals.append(argv[i + 1])
                i += 1
            out.append(",".join(vals))
        i += 1
    return out


@cli_entry
def main(argv=None, prog: str = "compare-models.py") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(Args, _split_runs(argv), prog=prog)
    from exmed_bert.evaluation.report import compare

    summary = compare(args.runs, args.output, metadata=args.metadata, risk_file=args.risk_file,
                      task_data=args.task_data, n_bootstrap=args.n_bootstrap, seed=args.seed)
    for line in summary["verdict"] + ([summary["oracle_note"]] if summary["oracle_note"] else []):
        print(line)
    print(f"wrote {args.output} (+ {Path(args.output).with_suffix('.json').name}, roc_all.png, calibration_all.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
