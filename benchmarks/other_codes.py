"""Vocabulary size and tokens with --other-codes drop vs keep on a MIMIC-like MEDS fixture (many labs).

    python benchmarks/other_codes.py [--subjects 2000] [--labs-per-stay 20,60] [--out /tmp/other_codes]

Per subject: 3-8 hospital stays; per stay 2-6 ICD-10 diagnoses, 1-4 ATC drugs, 0-2 ICD-10-PCS procedures,
20-60 lab rows (LAB//<itemid>//<unit>, 300 lab codes, Zipf-like frequencies) and 5-20 medication
administrations (MEDICATION//<name>//Administered, 200 names): roughly MIMIC-IV-MEDS's mix, where labs and
charted events outnumber diagnoses many times over; lab rows carry a lognormal numeric_value. Prints one
JSON line per mode: drop, keep, keep with --value-bins 5.
"""

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exmed_bert.convert import convert_patients  # noqa: E402
from exmed_bert.data.dataset import PatientDataset  # noqa: E402


def write_fixture(root: Path, n: int, seed: int = 0, labs_per_stay: tuple = (20, 60)) -> int:
    rng = np.random.default_rng(seed)
    icd = [f"{c}{d:02d}{e}" for c in "EIJKN" for d in range(10, 30) for e in range(3)]
    atc = [f"N02BE{d:02d}" for d in range(1, 40)] + [f"C09AA{d:02d}" for d in range(1, 20)]
    pcs = [f"0DT{c}0ZZ" for c in "0123456789"]
    labs = [f"LAB//{50800 + i}//{u}" for i, u in zip(range(300), ["mg/dL", "mmol/L", "g/dL", "%", "K/uL"] * 60)]
    lab_p = 1.0 / np.arange(1, 301) ** 1.1
    lab_p /= lab_p.sum()
    meds = [f"MEDICATION//Drug{i}//Administered" for i in range(200)]
    sid, times, codes, values = [], [], [], []
    for s in range(n):
        day = dt.datetime(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1500)))
        sid += [s, s]
        times += [dt.datetime(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 15000))), None]
        codes += ["MEDS_BIRTH", "GENDER//" + "FM"[s % 2]]
        values += [None, None]
        for _ in range(int(rng.integers(3, 9))):
            day += dt.timedelta(days=int(rng.integers(20, 200)))
            ev = (["DIAGNOSIS//ICD//10//" + c for c in rng.choice(icd, rng.integers(2, 7))]
                  + ["ATC//" + c for c in rng.choice(atc, rng.integers(1, 5))]
                  + ["PROCEDURE//ICD//10//" + c for c in rng.choice(pcs, rng.integers(0, 3))]
                  + list(rng.choice(labs, rng.integers(labs_per_stay[0], labs_per_stay[1] + 1), p=lab_p))
                  + list(rng.choice(meds, rng.integers(5, 21))))
            sid += [s] * len(ev)
            times += [day] * len(ev)
            codes += ev
            values += [float(rng.lognormal(3, 1)) if c.startswith("LAB//") else None for c in ev]
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"subject_id": pa.array(sid, pa.int64()), "time": pa.array(times, pa.timestamp("us")),
                             "code": pa.array(codes, pa.string()), "numeric_value": pa.array(values, pa.float32())}),
                   root / "data" / "0.parquet")
    return len(codes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=2000)
    ap.add_argument("--out", default="/tmp/other_codes")
    ap.add_argument("--labs-per-stay", default="20,60", help="lab rows per stay: min,max")
    a = ap.parse_args()
    out = Path(a.out)
    rows = write_fixture(out / "meds", a.subjects, labs_per_stay=tuple(int(x) for x in a.labs_per_stay.split(",")))
    for mode, bins in (("drop", 0), ("keep", 0), ("keep", 5)):
        t = time.perf_counter()
        name = f"{mode}{bins or ''}"
        man = convert_patients(out / "meds", out / name / "d.pt", progress=False, other_codes=mode, split_source="hash",
                               value_bins=bins)
        secs = time.perf_counter() - t
        ds = PatientDataset.load(out / name / "d_train.pt")
        types = ds.data["token_type_ids"]
        n_tok = int(types.numel())
        print(json.dumps({"mode": mode, "value_bins": bins, "meds_rows": rows, "patients": sum(v["patients"] for v in man["splits"].values()),
                          "vocab_size": man["vocab_size"], "train_tokens": n_tok,
                          "train_tokens_per_patient": round(n_tok / len(ds), 1),
                          "train_median_length": man["splits"]["train"]["length_percentiles"]["p50"],
                          "train_tokens_by_type": {k: int((types == k).sum()) for k in range(5)},
                          "seconds": round(secs, 1)}))


if __name__ == "__main__":
    main()
