"""generate_synthetic_patients.py --format meds: a MEDS root that passes the `meds` package's schemas, with the
converter's splits, the task as MEDS labels stamped so the generator's rule holds, and the round trip
(benchmarks/meds_roundtrip.sh) giving the same datasets as the same cohort's JSON."""

import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import meds
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from exmed_bert.cli.generate import main as generate
from exmed_bert.convert.conversion import convert_patients
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.splits import split_of
from exmed_bert.errors import UserError
from exmed_bert.synthetic.meds_root import subject_id, write_meds_root

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from meds_roundtrip_check import compare_dataset  # noqa: E402

N, SEED = 40, 3
MEDS_OF = {"train": "train", "val": "tuning", "test": "held_out"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The same cohort (seed 3) as JSONL + task CSV and as a MEDS root."""
    tmp = tmp_path_factory.mktemp("cohort")
    common = ["-n", str(N), "--seed", str(SEED)]
    assert generate([*common, "--output", str(tmp / "p.jsonl"), "--task-output", str(tmp / "task.csv")]) == 0
    assert generate([*common, "--format", "meds", "--output", str(tmp / "meds")]) == 0
    return tmp


def _data(root: Path) -> dict[str, pa.Table]:
    return {str(f.relative_to(root / "data")): pq.read_table(f) for f in sorted((root / "data").rglob("*.parquet"))}


def test_every_file_passes_the_meds_schemas(cohort):
    root = cohort / "meds"
    shards = _data(root)
    assert shards and all("/" in name for name in shards)            # data/<split>/<n>.parquet
    for table in shards.values():
        meds.DataSchema.validate(table)
        assert table.schema.field("subject_id").type == pa.int64()
        assert table.schema.field("time").type == pa.timestamp("us")
        assert table.schema.field("numeric_value").type == pa.float32()
        # a stay is one Visit/IP row with its discharge in `end`; every other row has no end
        assert table.schema.field("end").type == pa.timestamp("us")
        stay = pc.equal(table["code"], "Visit/IP").to_numpy(zero_copy_only=False)
        assert (table["end"].is_null().to_numpy(zero_copy_only=False) == ~stay).all()
    labels = sorted((root / "task_labels" / "hf").rglob("*.parquet"))
    assert labels
    for f in labels:
        meds.LabelSchema.validate(pq.read_table(f))
    meds.SubjectSplitSchema.validate(pq.read_table(root / "metadata" / "subject_splits.parquet"))
    codes = pq.read_table(root / "metadata" / "codes.parquet")
    meds.CodeMetadataSchema.validate(codes)
    meds.DatasetMetadataSchema.validate(json.loads((root / "metadata" / "dataset.json").read_text()))
    # every code of the data is described; a real code has its description and parents from the code tables
    used = set().union(*(t["code"].to_pylist() for t in shards.values()))
    table = {c: (d, p) for c, d, p in zip(*(codes[k].to_pylist() for k in ("code", "description", "parent_codes")))}
    assert used == set(table)
    icd = next(c for c in used if c.startswith("ICD10CM//") and "." in c)
    assert table[icd][0] and table[icd][1] and all(p.startswith("ICD10CM//") for p in table[icd][1])
    assert table["MEDS_BIRTH"][0]


def test_subjects_splits_and_rows_match_the_json_cohort(cohort):
    root = cohort / "meds"
    patients = [json.loads(line) for line in open(cohort / "p.jsonl")]
    splits = pq.read_table(root / "metadata" / "subject_splits.parquet").to_pydict()
    split = dict(zip(splits["subject_id"], splits["split"]))
    # the converter's hash split of the patient id, for the same seed (convert --seed 3)
    assert split == {subject_id(p["patient_id"]): MEDS_OF[split_of(p["patient_id"], SEED)] for p in patients}
    assert subject_id("P0042") == 42
    seen = set()
    for name, t in _data(root).items():
        sid, time, code = (t[c].to_pylist() for c in ("subject_id", "time", "code"))
        assert sid == sorted(sid)                                   # sorted by subject ...
        for s in set(sid):
            assert split[s] == name.split("/")[0]                    # ... in its split's folder, one shard only
            assert s not in seen
            seen.add(s)
            times = [tm for i, tm in zip(sid, time) if i == s]
            assert times[0] is None and all(tm is not None for tm in times[1:])   # the static fact first
            assert times[1:] == sorted(times[1:])                    # ... then by time
    assert seen == set(split)
    # one subject's rows are its JSON record: sex without a time, birth at midnight, events at noon
    p = patients[0]
    sid = subject_id(p["patient_id"])
    t = next(t for t in _data(root).values() if sid in t["subject_id"].to_pylist())
    rows = [(tm, c) for s, tm, c in zip(*(t[k].to_pylist() for k in ("subject_id", "time", "code"))) if s == sid]
    assert rows[0] == (None, f"GENDER//{p['sex']}")
    assert rows[1] == (dt.datetime.fromisoformat(p["birth_date"]), "MEDS_BIRTH")
    noon = dt.timedelta(hours=12)
    expect = sorted([(dt.datetime.fromisoformat(e["date"]) + noon, f"ICD10CM//{e['code']}") for e in p["diagnoses"]]
                    + [(dt.datetime.fromisoformat(e["date"]) + noon, f"ATC//{e['code']}") for e in p["prescriptions"]]
                    + [(dt.datetime.fromisoformat(e["date"]) + noon, f"CPT//{e['code']}") for e in p["procedures"]])
    assert sorted(r for r in rows[2:] if r[1] != "Visit/IP") == expect
    p = next(p for p in patients if p["hospitalizations"])
    sid = subject_id(p["patient_id"])
    t = next(t for t in _data(root).values() if sid in t["subject_id"].to_pylist())
    stays = [(tm, end) for s, tm, c, end in zip(*(t[k].to_pylist() for k in ("subject_id", "time", "code", "end")))
             if s == sid and c == "Visit/IP"]
    assert stays == [(dt.datetime.fromisoformat(h["admission_date"]) + noon,
                      dt.datetime.fromisoformat(h["discharge_date"]) + noon) for h in p["hospitalizations"]]


def test_labels_keep_the_generators_rule_under_both_cuts(cohort):
    root = cohort / "meds"
    task = {subject_id(r["patient_id"]): r for r in csv.DictReader(open(cohort / "task.csv"))}
    labels = pa.concat_tables(pq.read_table(f) for f in sorted((root / "task_labels" / "hf").rglob("*.parquet")))
    rows = labels.to_pydict()
    assert len(rows["subject_id"]) == N and set(rows["subject_id"]) == set(task)
    events = pa.concat_tables(_data(root).values()).to_pydict()
    for sid, when, value in zip(rows["subject_id"], rows["prediction_time"], rows["boolean_value"]):
        date = dt.date.fromisoformat(task[sid]["prediction_date"])
        assert when == dt.datetime.combine(date, dt.time()) and value == (task[sid]["label"] == "1")
        times = [tm for s, tm, c in zip(events["subject_id"], events["time"], events["code"])
                 if s == sid and tm is not None and c != "MEDS_BIRTH"]
        before_date = {tm for tm in times if tm.date() < date}
        assert {tm for tm in times if tm <= when} == before_date      # MEDS: at or before the time
        assert {tm for tm in times if tm < when} == before_date       # a strict cut: the same events
    # the true risk of each subject, exactly as the JSON cohort's, keyed by subject id
    risk = {r["patient_id"]: r["true_risk"] for r in csv.DictReader(open(cohort / "task_risk.csv"))}
    mine = list(csv.DictReader(open(root / "task_labels" / "hf_risk.csv")))
    assert {r["patient_id"]: r["true_risk"] for r in mine} == {str(subject_id(k)): v for k, v in risk.items()}


def test_the_same_seed_gives_the_same_bytes_and_a_rerun_replaces_the_root(cohort, tmp_path):
    out = tmp_path / "again"
    assert generate(["-n", str(N), "--seed", str(SEED), "--format", "meds", "--output", str(out)]) == 0
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(cohort / "meds") for p in (cohort / "meds").rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (cohort / "meds" / f).read_bytes() for f in files)
    stale = out / "data" / "train" / "99.parquet"
    stale.write_bytes(b"old")
    assert generate(["-n", "10", "--format", "meds", "--output", str(out)]) == 0
    assert not stale.exists() and pq.read_table(out / "metadata" / "subject_splits.parquet").num_rows == 10


def test_bad_outputs_are_one_line_errors(tmp_path, capsys):
    assert generate(["-n", "5", "--format", "meds", "--output", str(tmp_path / "p.json")]) == 2
    assert "writes a folder" in capsys.readouterr().err
    mine = tmp_path / "someone_elses"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert generate(["-n", "5", "--format", "meds", "--output", str(mine)]) == 2
    assert "did not write" in capsys.readouterr().err and (mine / "notes.txt").exists()
    with pytest.raises(UserError, match="no number"):
        write_meds_root([{"patient_id": "abc"}], None, None, tmp_path / "x")
    with pytest.raises(UserError, match="already taken"):
        write_meds_root([{"patient_id": "P1"}, {"patient_id": "Q01"}], None, None, tmp_path / "y")
    assert not (tmp_path / "y").exists()                          # nothing half-written


def _stay(a: str, d: str) -> dict:
    return {"admission_date": a, "discharge_date": d}


# hand-built patients whose stays a reader pairing admission and discharge rows first-in-first-out gets wrong:
# a stay inside another, two admitted the same day, one repeated exactly (identical rows) and a chain
STAY_PATIENTS = [
    ("P1", [_stay("2020-01-01", "2020-01-20"), _stay("2020-01-05", "2020-01-08")], "2020-01-10"),
    ("P2", [_stay("2020-02-01", "2020-02-10"), _stay("2020-02-01", "2020-02-03")], "2021-01-01"),
    ("P3", [_stay("2020-03-01", "2020-03-04"), _stay("2020-03-01", "2020-03-04"), _stay("2020-03-03", "2020-03-06")],
     "2021-01-01"),
    ("P4", [_stay("2020-04-01", "2020-04-05"), _stay("2020-04-05", "2020-04-09")], "2020-04-07"),
]


def _stay_patient(pid: str, stays: list) -> dict:
    days = sorted({h["admission_date"] for h in stays})
    return {"patient_id": pid, "sex": "F", "birth_date": "1950-06-01", "hospitalizations": stays,
            "diagnoses": [{"code": "I50.9", "date": d} for d in days] + [{"code": "E11.9", "date": "2019-05-01"}],
            "prescriptions": [{"code": "C03CA01", "date": "2019-05-01"}], "procedures": []}


def _stays_of(ds: PatientDataset) -> dict[str, list[tuple[int, int]]]:
    return {pid: list(zip(ds.stay_starts(i).tolist(), ds.stays(i).tolist())) for i, pid in enumerate(ds.patient_ids)}


def test_nested_same_day_and_repeated_stays_round_trip(tmp_path):
    patients = [_stay_patient(pid, stays) for pid, stays, _ in STAY_PATIENTS]
    (tmp_path / "p.json").write_text(json.dumps({"patients": patients}))
    task = tmp_path / "task.csv"
    task.write_text("patient_id,label,prediction_date\n" + "".join(f"{pid},{i % 2},{date}\n"
                                                                   for i, (pid, _, date) in enumerate(STAY_PATIENTS)))
    rows = [(pid, i % 2, date) for i, (pid, _, date) in enumerate(STAY_PATIENTS)]
    root = tmp_path / "meds"
    write_meds_root(patients, rows, None, root, patients_per_shard=1)   # a shard per subject: 2 workers share them
    t = pa.concat_tables(_data(root).values())
    assert pc.sum(pc.equal(t["code"], "Visit/IP")).as_py() == 9 and pc.sum(t["end"].is_valid()).as_py() == 9
    assert t.group_by(["subject_id", "time", "code", "end"]).aggregate([]).num_rows == t.num_rows   # no duplicates
    convert_patients(tmp_path / "p.json", tmp_path / "json" / "c.pt", task_data=task, progress=False)
    day = lambda d: (dt.date.fromisoformat(d) - dt.date(1970, 1, 1)).days   # noqa: E731
    want = {str(subject_id(pid)): [(day(h["admission_date"]), day(h["discharge_date"]) - day(h["admission_date"]))
                                   for h in stays] for pid, stays, _ in STAY_PATIENTS}
    for name, settings in {"per record": {"fast": False}, "columnar, 1 worker": {"workers": 1},
                           "columnar, 2 workers": {"workers": 2}}.items():
        out = tmp_path / name.replace(" ", "_").replace(",", "")
        convert_patients(root, out / "c.pt", task_data=root / "task_labels" / "task", progress=False, **settings)
        assert (out / "vocab.json").read_bytes() == (tmp_path / "json" / "vocab.json").read_bytes(), name
        got = {}
        for split in ("train", "val", "test", "task_train", "task_val", "task_test"):
            a, b = (torch.load(d / f"c_{split}.pt", weights_only=True) for d in (tmp_path / "json", out))
            assert compare_dataset(a, b) == [], (name, split)
            if not split.startswith("task"):
                got |= _stays_of(PatientDataset.load(out / f"c_{split}.pt"))
        assert got == want, name   # every stay, as admitted and discharged, none merged, dropped or re-paired


def _dataset(n_tokens: list[int]) -> dict:
    """A tiny dataset dict: patients P1..Pn with the given token counts."""
    n = len(n_tokens)
    off = torch.tensor([0, *torch.tensor(n_tokens).cumsum(0).tolist()])
    T = int(off[-1])
    return {"format": "exmed-bert-dataset", "input_ids": torch.arange(T), "days": torch.arange(T) * 2,
            "offsets": off, "los_offsets": torch.zeros(n + 1, dtype=torch.long), "los_days": torch.zeros(0),
            "sex": torch.arange(n) % 2, "labels": torch.arange(n) % 2, "prediction_days": torch.arange(n) + 100,
            "patient_ids": [f"P{i + 1}" for i in range(n)]}


def _as_meds(d: dict, order: list[int], day_shift: int = 0) -> dict:
    """`d` as its MEDS conversion would be: ids as subject ids, patients in `order`, prediction times."""
    off = d["offsets"].tolist()
    tok = torch.cat([torch.arange(off[i], off[i + 1]) for i in order])
    out = dict(d, input_ids=d["input_ids"][tok], days=d["days"][tok],
               offsets=torch.tensor([0, *torch.tensor([off[i + 1] - off[i] for i in order]).cumsum(0).tolist()]),
               sex=d["sex"][order], labels=d["labels"][order], prediction_days=d["prediction_days"][order] + day_shift,
               patient_ids=[str(subject_id(d["patient_ids"][i])) for i in order])
    out["prediction_times"] = torch.zeros(len(order), dtype=torch.long)
    return out


def test_the_round_trip_check_sees_a_planted_difference():
    a = _dataset([3, 1, 2])
    for order in ([0, 1, 2], [2, 0, 1]):                   # the same datasets, in any patient order
        assert compare_dataset(a, _as_meds(a, order)) == []
        b = _as_meds(a, order)
        b["input_ids"] = b["input_ids"].clone()
        b["input_ids"][-1] += 1                           # one token of one patient
        assert any("input_ids" in p for p in compare_dataset(a, b))
    b = _as_meds(a, [0, 1, 2])
    b["labels"] = 1 - b["labels"]
    assert any("labels" in p for p in compare_dataset(a, b))
    b = _as_meds(a, [0, 1, 2])
    b["prediction_days"] = b["prediction_days"] + 1          # read a day later: a difference too
    assert any("prediction_days" in p for p in compare_dataset(a, b))
    b = _as_meds(a, [0, 1])                                # a patient lost
    assert any("patients differ" in p for p in compare_dataset(a, b))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_meds_roundtrip_sh_finds_the_two_paths_identical(tmp_path):
    env = {**os.environ, "PY": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    p = subprocess.run(["bash", str(REPO / "benchmarks" / "meds_roundtrip.sh"), "60", str(tmp_path / "rt")], env=env,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    assert "round trip: identical" in p.stdout
    check = json.loads((tmp_path / "rt" / "check.json").read_text())
    assert check["identical"] and check["vocab_identical"]
    assert {"train", "val", "test", "task_train", "task_val", "task_test"} <= set(check["datasets"])
    assert sum(check["datasets"][s]["patients"] for s in ("task_train", "task_val", "task_test")) > 0
    assert "took" in (tmp_path / "rt" / "timings.txt").read_text()
