"""`convert_synthetic_to_dataset.py`: patient records (JSON, JSONL or MEDS) -> train/val/test datasets."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry


@dataclass
class Args:
    """Convert patient records to encoded PyTorch datasets (train/val/test), vocab.json and a manifest."""

    yaml_section: ClassVar[Optional[str]] = None

    input: str = field(default="data/synthetic_patients.json", metadata={
        "help": "patients as JSON ({\"patients\": [...]}), JSONL, or a MEDS folder of Parquet files"})
    output: str = field(default="pretrain_stuff/synthetic.pt", metadata={
        "help": "output path; writes <stem>_train.pt, <stem>_val.pt, <stem>_test.pt, vocab.json beside it"})
    split: str = field(default="all", metadata={"help": "which split to write", "choices": ["all", "train", "val", "test"]})
    max_length: int = field(default=512, metadata={
        "help": "maximum tokens per patient; older visits are dropped first"})
    train_ratio: float = field(default=0.8, metadata={
        "help": "share of patients in train; the rest is split evenly between val and test"})
    seed: int = field(default=42, metadata={"help": "seed of the patient-id hash that assigns splits"})
    split_source: str = field(default="auto", metadata={
        "help": "where splits come from: meds = a MEDS dataset's metadata/subject_splits.parquet (train -> "
                "train, tuning -> val, held_out -> test; subjects in other splits are left out), hash = the "
                "seeded patient-id hash, auto = meds when that file exists, else hash",
        "choices": ["auto", "meds", "hash"]})
    min_code_count: int = field(default=1, metadata={
        "help": "codes seen fewer times in the training split become [UNK]"})
    task_data: Optional[str] = field(default=None, metadata={
        "help": "CSV patient_id,label[,prediction_date]; also writes <stem>_task_{train,val,test}.pt with "
                "only labelled patients, cut before their prediction date"})
    on_error: str = field(default="skip", metadata={
        "help": "bad records: skip them (listed in <stem>_rejected.jsonl) or fail on the first",
        "choices": ["skip", "fail"]})

    def validate(self) -> None:
        if not 0.0 < self.train_ratio < 1.0:
            raise UserError(f"--train-ratio must be between 0 and 1 (exclusive), got {self.train_ratio}")
        if self.max_length < 3:
            raise UserError(f"--max-length must be at least 3 ([CLS], one code, [SEP]), got {self.max_length}")
        if self.min_code_count < 1:
            raise UserError(f"--min-code-count must be at least 1, got {self.min_code_count}")


@cli_entry
def main(argv=None) -> int:
    args = parse_args(Args, argv, prog="convert_synthetic_to_dataset.py")
    from exmed_bert.convert.conversion import convert_patients, output_paths

    manifest = convert_patients(args.input, args.output, split=args.split, max_length=args.max_length,
                                train_ratio=args.train_ratio, seed=args.seed, min_code_count=args.min_code_count,
                                task_data=args.task_data, on_error=args.on_error, args=dataclasses.asdict(args),
                                split_source=args.split_source)
    from exmed_bert.io import write_run_info

    out = Path(args.output)
    write_run_info(out.parent, args, extra={"data_fingerprint": manifest["input_fingerprint"]},
                   name=f"{out.stem}_run_config.json")
    print(summary_line(manifest, output_paths(args.output)))
    return 0


def summary_line(manifest: dict, paths: dict) -> str:
    splits = ", ".join(f"{k} {v['patients']}" for k, v in manifest["splits"].items())
    unk = sum(v["unk_tokens"] for k, v in manifest["splits"].items() if k != "train")
    line = (f"converted {manifest['records'] - manifest['rejected']} of {manifest['records']} patients ({splits}); "
            f"vocabulary {manifest['vocab_size']} tokens; [UNK] in val/test {unk}; ")
    if manifest.get("split_source") == "meds":
        line += (f"splits from MEDS subject_splits.parquet ({manifest.get('patients_outside_the_meds_splits', 0)} "
                 "patients outside train/tuning/held_out left out); ")
    if manifest["rejected"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(manifest["reject_reasons"].items(), key=lambda x: -x[1]))
        line += f"rejected {manifest['rejected']} ({reasons}; see {paths['rejected']})"
    else:
        line += "rejected 0"
    if "task" in manifest:
        t = manifest["task"]
        task_splits = ", ".join(f"{k} {v['patients']}" for k, v in t["splits"].items())
        line += (f"; task: {task_splits}"
                 f" ({t['unlabelled_patients']} unlabelled, {t['no_events_before_prediction_date']} without events "
                 f"before the prediction date, {t['labels_without_patient']} labels without a patient)")
    return line + f"; written to {paths['vocab'].parent}"


if __name__ == "__main__":
    sys.exit(main())
