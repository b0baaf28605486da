"""`generate_synthetic_patients.py`: synthetic claims with real codes, a planted task and its oracle."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry
from exmed_bert.synthetic.task import TASKS


@dataclass
class Args:
    """Generate synthetic patients (ICD-10-CM diagnoses, ATC drugs, CPT procedures, hospital stays) with a
    planted heart-failure-hospitalisation task. See docs/SYNTHETIC_DATA_GUIDE.md."""

    yaml_section: ClassVar[Optional[str]] = None

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
                "treatment started after its diagnosis, a run of admissions); see docs/SYNTHETIC_DATA_GUIDE.md",
        "choices": list(TASKS)})
    task_horizon_days: int = field(default=365, metadata={
        "help": "the outcome counts if it happens within this many days after the prediction date"})

    def validate(self) -> None:
        if self.num_patients < 1:
            raise UserError(f"--num-patients must be at least 1, got {self.num_patients}")
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
        if Path(self.output).resolve() == Path(self.task_output).resolve():
            raise UserError(f"--output and --task-output are the same file ({self.output}); give two paths")


def _date(flag: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{flag} must be a date as YYYY-MM-DD, got {value!r}") from None


def check_writable(path: str, flag: str) -> None:
    """Fail fast, before minutes of generation, when `path` cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file path such as {p / 'synthetic_patients.json'}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p.parent):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write there ({e.strerror or e}); choose another path") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{flag} {path}: the file exists and is read-only; choose another path")


@cli_entry
def main(argv=None) -> int:
    args = parse_args(Args, argv, prog="generate_synthetic_patients.py")
    # numpy comes with these; the schema (Args) must stay importable without it, see ARCHITECTURE.md
    from exmed_bert.synthetic.cohort import Params, generate
    from exmed_bert.synthetic.writer import metadata_path, risk_path

    if Path(args.output).resolve() == risk_path(args.task_output).resolve():
        raise UserError(f"--output {args.output} is where the true risks of --task-output {args.task_output} "
                        "go; give another --output")
    check_writable(args.output, "--output")
    check_writable(args.task_output, "--task-output")

    params = Params(num_patients=args.num_patients, novel_prob=args.novel_prob, seed=args.seed,
                    start_date=args.start_date, end_date=args.end_date,
                    task_horizon_days=args.task_horizon_days, clinvec_dir=args.clinvec_dir, task=args.task)
    try:
        meta = generate(params, args.output, args.task_output)
    except OSError as e:  # disk full, path vanished mid-run: the atomic writes left nothing partial
        raise UserError(f"{e.filename or args.output}: write failed ({e.strerror or e})") from None
    from exmed_bert.io import write_run_info

    out = Path(args.output)
    # versions and git commit live beside the data, not in it, so the data stays byte-identical per seed
    write_run_info(out.parent, args, name=f"{out.stem}_run_config.json")
    t, nc, cp = meta["task"], meta["novel_codes"], meta["codes_per_patient"]
    where = f"{args.output}" + (f" (+ {metadata_path(args.output)})" if args.output.lower().endswith(".jsonl") else "")
    print(f"wrote {args.num_patients} patients to {where}: median {cp['p50']:g} codes per patient "
          f"(p95 {cp['p95']:g}); novel codes {nc['realised_rate']:.2%} (target {nc['target']:.2%}); "
          f"task {args.task_output}: prevalence {t['prevalence']:.1%}, whole-cohort oracle AUROC "
          f"{'n/a' if t['oracle_auroc'] is None else format(t['oracle_auroc'], '.3f')}; "
          f"true risk per patient in {risk_path(args.task_output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
