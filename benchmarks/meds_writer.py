"""Patients JSONL (the generator's schema) -> a MEDS dataset root, for benchmarks and tests.

    python benchmarks/meds_writer.py data/synthetic_patients.jsonl /tmp/meds --shards 4
    python benchmarks/meds_writer.py p.jsonl /tmp/one.parquet --shards 1 --single-file   # one shard file

Writes <out>/data/<i>.parquet (subject_id int64 = the patient's line number, time timestamp[us], code
string in this project's dialect: `MEDS_BIRTH`, `GENDER//F`, `ICD10CM//E11.65`, `ATC//N02BE01`,
`CPT//99214`, `HOSPITAL_ADMISSION//IP` / `HOSPITAL_DISCHARGE//HOME`) and <out>/metadata/dataset.json.
Patients are cut into contiguous shards and each shard is sorted by subject_id then time, as MEDS
writers do. Rows are flushed every `ROWS_PER_FLUSH` rows, so memory stays flat.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

KIND_PREFIX = {"diagnoses": "ICD10CM", "prescriptions": "ATC", "procedures": "CPT"}
SCHEMA = pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string())])
ROWS_PER_FLUSH = 200_000


def patient_rows(sid: int, p: dict) -> list[tuple[int, str, str]]:
    """(subject_id, 'YYYY-MM-DD', code) rows of one patient, sorted by date (stable)."""
    rows = []
    if p.get("birth_date"):
        rows.append((sid, p["birth_date"], "MEDS_BIRTH"))
    for kind, prefix in KIND_PREFIX.items():
        for e in p.get(kind) or []:
            system = (e.get("system") or prefix).upper()
            rows.append((sid, e["date"], f"{system}//{e['code']}"))
    for h in p.get("hospitalizations") or []:
        rows.append((sid, h["admission_date"], "HOSPITAL_ADMISSION//IP"))
        rows.append((sid, h["discharge_date"], "HOSPITAL_DISCHARGE//HOME"))
    rows.sort(key=lambda r: r[1])
    if p.get("sex"):  # MEDS writes static facts without a time; a dated row keeps this converter simple
        rows.insert(0, (sid, rows[0][1] if rows else "1970-01-01", f"GENDER//{p['sex']}"))
    return rows


def _flush(writer: pq.ParquetWriter, rows: list) -> None:
    if not rows:
        return
    sids, dates, codes = zip(*rows)
    days = pa.array(dates, pa.string()).cast(pa.date32()).cast(pa.timestamp("us"))
    writer.write_table(pa.table([pa.array(sids, pa.int64()), days, pa.array(codes, pa.string())], schema=SCHEMA))
    rows.clear()


def write_meds(jsonl: str | Path, out: str | Path, shards: int = 4, single_file: bool = False) -> dict:
    """Write `jsonl` as MEDS under `out` (a root) or, with single_file, as the one file `out`.
    Returns {"patients": n, "rows": n, "files": [...]}."""
    jsonl, out = Path(jsonl), Path(out)
    with open(jsonl, "rb") as f:
        n = sum(1 for line in f if line.strip())
    if single_file:
        shards = 1
        out.parent.mkdir(parents=True, exist_ok=True)
        paths = [out]
    else:
        (out / "data").mkdir(parents=True, exist_ok=True)
        (out / "metadata").mkdir(parents=True, exist_ok=True)
        (out / "metadata" / "dataset.json").write_text(json.dumps(
            {"dataset_name": f"benchmark {jsonl.name}", "dataset_version": "1", "etl_name": "meds_writer.py",
             "meds_version": "0.3.3", "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}))
        paths = [out / "data" / f"{i}.parquet" for i in range(shards)]
    per_shard = -(-n // shards)
    total, rows, sid = 0, [], 0
    writer = None
    with open(jsonl, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            if sid % per_shard == 0:
                if writer is not None:
                    _flush(writer, rows)
                    writer.close()
                writer = pq.ParquetWriter(paths[sid // per_shard], SCHEMA)
            new = patient_rows(sid, json.loads(line))
            rows += new
            total += len(new)
            sid += 1
            if len(rows) >= ROWS_PER_FLUSH:
                _flush(writer, rows)
    if writer is not None:
        _flush(writer, rows)
        writer.close()
    return {"patients": sid, "rows": total, "files": [str(p) for p in paths if p.exists()]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jsonl")
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--single-file", action="store_true", help="write one Parquet file at OUT")
    a = ap.parse_args()
    print(json.dumps(write_meds(a.jsonl, a.out, a.shards, a.single_file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
