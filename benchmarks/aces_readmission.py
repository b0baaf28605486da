"""An ACES-style 30-day readmission task on a small MIMIC-IV-MEDS-like root: how many label rows the
conversion keeps, and how many events each row holds, against what the labels define (MEDS: the data up to
and including prediction_time).

Each subject has 1-3 admissions. As in MIMIC-IV-MEDS, an admission's diagnoses are stamped at its discharge,
its labs during the stay; each label predicts at a discharge (is there another admission within 30 days?).

    .venv/bin/python benchmarks/aces_readmission.py --subjects 1000 --out /tmp/aces

Prints the label rows, the rows in the task datasets (with and without history) and the code events per
row, beside the counts the labels define. Run it with another checkout on PYTHONPATH to compare rules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from pathlib import Path

import numpy as np


def build_root(root: Path, subjects: int, seed: int = 0):
    """Write data/train/0.parquet and a label file; return (label rows, events each label defines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for s in range(1, subjects + 1):
        birth = dt.datetime(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20000)))
        rows += [(s, birth, "MEDS_BIRTH"), (s, None, "GENDER//" + "FM"[s % 2])]
        t = dt.datetime(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1500)), hours=int(rng.integers(0, 24)))
        stays = []
        for _ in range(int(rng.integers(1, 4))):
            adm = t
            dis = adm + dt.timedelta(days=int(rng.integers(1, 9)), hours=int(rng.integers(0, 12)))
            rows.append((s, adm, "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM"))
            for k in range(int(rng.integers(1, 4))):   # labs during the stay
                rows.append((s, adm + dt.timedelta(hours=6 * (k + 1)), f"LAB//{50900 + k}//mg/dL"))
            for d in rng.choice(40, size=int(rng.integers(2, 6)), replace=False):   # diagnoses at discharge
                rows.append((s, dis, f"DIAGNOSIS//ICD//10//E{10 + int(d)}"))
            rows.append((s, dis, "HOSPITAL_DISCHARGE//HOME"))
            stays.append((adm, dis))
            t = dis + dt.timedelta(days=int(rng.integers(3, 90)))
        for i, (adm, dis) in enumerate(stays):
            nxt = stays[i + 1][0] if i + 1 < len(stays) else None
            labels.append((s, dis, nxt is not None and (nxt - dis) <= dt.timedelta(days=30)))
    rows.sort(key=lambda r: (r[0], r[1] or dt.datetime.min))
    (root / "data" / "train").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"subject_id": pa.array([r[0] for r in rows], pa.int64()),
                             "time": pa.array([r[1] for r in rows], pa.timestamp("us")),
                             "code": pa.array([r[2] for r in rows], pa.string()),
                             "numeric_value": pa.array([None] * len(rows), pa.float32())}),
                   root / "data" / "train" / "0.parquet")
    (root / "labels").mkdir(exist_ok=True)
    pq.write_table(pa.table({"subject_id": pa.array([l[0] for l in labels], pa.int64()),
                             "prediction_time": pa.array([l[1] for l in labels], pa.timestamp("us")),
                             "boolean_value": pa.array([l[2] for l in labels], pa.bool_())}),
                   root / "labels" / "readmission_30d.parquet")
    # what the labels define: the diagnosis events at or before each prediction time (the ones this
    # conversion reads with --other-codes drop; labs and stays are not events)
    by_subject: dict = {}
    for s, t, code in rows:
        if code.startswith("DIAGNOSIS//"):
            by_subject.setdefault(s, []).append(t)
    defined = [sum(1 for t in by_subject.get(s, []) if t <= when) for s, when, _ in labels]
    return len(labels), defined


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--out", default="/tmp/aces_readmission")
    a = ap.parse_args(argv)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    n_labels, defined = build_root(out / "meds", a.subjects)

    from exmed_bert.cli.convert import main as convert_main
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import FIRST_CODE_ID, UNK_ID

    rc = convert_main(["--input", str(out / "meds"), "--output", str(out / "ds" / "m.pt"), "--max-length", "2048",
                       "--task-data", str(out / "meds" / "labels" / "readmission_30d.parquet"),
                       "--split-source", "hash", "--workers", "1"])
    if rc:
        return rc
    rows = with_history = events = 0
    for split in ("train", "val", "test"):
        data = PatientDataset.load(out / "ds" / f"m_task_{split}.pt").data
        offsets = np.asarray(data["offsets"].tolist(), dtype=np.int64)
        lengths = np.diff(offsets)
        tok = np.asarray(data["input_ids"].tolist(), dtype=np.int64)
        code = (tok >= FIRST_CODE_ID) | (tok == UNK_ID)
        per_row = np.add.reduceat(code.astype(np.int64), offsets[:-1]) if len(lengths) else np.zeros(0, np.int64)
        rows += len(lengths)
        with_history += int((per_row > 0).sum())
        events += int(per_row.sum())
    defined = np.asarray(defined)
    print(f"label rows {n_labels}; defined by the labels: {int((defined > 0).sum())} rows with history, "
          f"{defined.sum()} diagnosis events ({defined.mean():.2f} per row)")
    print(f"task datasets: {rows} rows ({with_history} with history, {rows - with_history} [CLS] only), "
          f"{events} events ({events / max(rows, 1):.2f} per row, {events / max(n_labels, 1):.2f} per label row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
