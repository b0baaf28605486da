"""Patients JSONL (the generator's schema) -> a MEDS root, for benchmarks and tests, written by the generator's
own MEDS writer (`exmed_bert.synthetic.meds_root.write_meds_root`, docs/SYNTHETIC_DATA_GUIDE.md "MEDS output").

    python benchmarks/meds_writer.py data/synthetic_patients.jsonl /tmp/meds --shards 4
    python benchmarks/meds_writer.py p.jsonl /tmp/meds --task task.csv        # + the task as MEDS labels
    python benchmarks/meds_writer.py p.jsonl /tmp/meds --shards 4 --flat      # data/<i>.parquet, 4 equal shards

The root: data/<split>/<n>.parquet (subject_id int64 = the number in the patient id, time timestamp[us], code,
numeric_value float32, end timestamp[us]; `MEDS_BIRTH`, `GENDER//F`, `ICD10CM//E11.65`, `ATC//N02BE01`,
`CPT//99214`, and a stay as `Visit/IP` with its discharge in `end`), each shard sorted by subject and time,
and metadata/ (dataset.json, subject_splits.parquet: the converter's hash split for --seed, codes.parquet).
--shards N cuts the cohort into shards of about patients / N subjects (so about N train shards, and one or
more for tuning and held_out); --flat writes N equal shards at data/<i>.parquet in input order, the layout the
conversion benchmarks (convert_throughput.py) are measured on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from exmed_bert.data.layout import risk_path
from exmed_bert.data.splits import DEFAULT_SEED
from exmed_bert.synthetic.meds_root import read_patients, read_risk_strings, read_task_rows, write_meds_root


def write_meds(jsonl: str | Path, out: str | Path, shards: int = 4, flat: bool = False,
               task: str | Path | None = None, seed: int = DEFAULT_SEED) -> dict:
    """Write `jsonl` as a MEDS root at `out` (with `task`, a generator task CSV, its labels and true risks).
    Returns {"patients": n, "rows": n, "files": [...]} and the writer's summary."""
    jsonl = Path(jsonl)
    with open(jsonl, "rb") as f:
        n = sum(1 for line in f if line.strip())
    rows = read_task_rows(task) if task else None
    risk = read_risk_strings(risk_path(task)) if task and risk_path(task).is_file() else None
    summary = write_meds_root(read_patients(jsonl), rows, risk, out, seed=seed, task_name="task",
                              patients_per_shard=max(1, -(-n // shards)), split_folders=not flat,
                              dataset_name=f"benchmark {jsonl.name}")
    return {**summary, "patients": summary["subjects"], "files": [str(Path(out) / f) for f in summary["files"]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl")
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--flat", action="store_true", help="N equal shards at data/<i>.parquet, in input order")
    ap.add_argument("--task", help="the generator's task CSV: written as MEDS labels under task_labels/task/")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the converter's split seed")
    a = ap.parse_args()
    print(json.dumps(write_meds(a.jsonl, a.out, a.shards, a.flat, a.task, a.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
