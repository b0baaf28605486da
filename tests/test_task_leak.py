"""No field of a task split tells the label from what happened on or after the prediction date.

The fixture plants a leak only in the future: every patient has codes and hospital stays before the
prediction date drawn independently of the label, and only positives have stays (and codes) admitted on
or after it; stays still open on the prediction date last longer for positives. The pretraining
datasets (not cut) must separate the labels almost perfectly, so the test has power; no statistic of any
tensor of any task split may separate them better than chance. The same holds for MEDS labels with a
prediction time at noon: the morning of the prediction day is in, the outcome (at noon, an admission
at 13:00, and later) is not.
"""

import datetime as dt
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from exmed_bert.convert.conversion import convert_patients, output_paths
from exmed_bert.data.dataset import TOKEN_KEYS, PatientDataset

N = 600
EPOCH = dt.date(1970, 1, 1)
DX = ["E11.9", "I10", "J45.909", "M54.5", "K21.9", "F32.9", "E78.5", "N39.0", "R51", "J06.9", "L40.0", "G43.909"]
ATC = ["A10BA02", "C09AA05", "N02BE01", "R03AC02", "C10AA05"]

# Every tensor of a dataset dict, by what it is indexed by. A new field must be added here (and so be
# checked for leaks) before this test passes.
PER_TOKEN = set(TOKEN_KEYS)
PER_STAY = {"los_days", "los_start_days"}
PER_PATIENT = {"sex", "birth_days", "prediction_days", "prediction_times"}
INDEX = {"offsets", "los_offsets"}   # their per-patient differences are the token / stay counts below
NOT_FEATURES = {"labels"}

# Under the null (a statistic independent of the label) the AUROC is a Mann-Whitney U / (n0 n1): mean 0.5,
# standard error sqrt((n0 + n1 + 1) / (12 n0 n1)) (ties only shrink it), 0.024 for 300 + 300 patients. About
# 30 statistics are tested; 4.5 standard errors (two-sided p 7e-6 each, under 3e-4 for all of them) keeps
# chance away from a false alarm while a real leak (0.9 and up here) is far outside.
Z = 4.5


def day(d: int) -> str:
    return (EPOCH + dt.timedelta(days=int(d))).isoformat()


def stay(a: int, d: int) -> dict:
    return {"admission_date": day(a), "discharge_date": day(d)}


def make_cohort(seed: int = 0) -> tuple[list[dict], dict, dict]:
    """(patients, {pid: label}, {pid: prediction day}); stays known before the prediction date are
    label-independent, stays admitted on or after it belong to positives only."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat([0, 1], N // 2))
    pats, lab, pred_of = [], {}, {}
    for i, y in enumerate(labels.tolist()):
        pid = f"P{i:04d}"
        pred = int(rng.integers(17900, 18600))                      # 2019-01 .. 2020-12
        birth = int(rng.integers(-11000, 7000))                     # 1940 .. 1989
        dx = [{"code": DX[k], "date": day(pred - rng.integers(1, 1000))} for k in rng.integers(0, len(DX), rng.integers(1, 9))]
        rx = [{"code": ATC[k], "date": day(pred - rng.integers(1, 800))} for k in rng.integers(0, len(ATC), rng.integers(0, 4))]
        px = []
        stays = []
        for _ in range(int(rng.integers(0, 4))):                    # over before the prediction date
            a = pred - int(rng.integers(30, 900))
            stays.append(stay(a, a + int(rng.integers(0, 13))))
        if rng.random() < 0.15:                                     # discharged on the prediction date
            stays.append(stay(pred - 5, pred))
        if rng.random() < 0.3:                                      # open on it: longer for positives
            a = pred - int(rng.integers(1, 6))
            stays.append(stay(a, pred + (int(rng.integers(10, 31)) if y else 1)))
        if y:                                                       # the outcome: on or after the date
            for _ in range(int(rng.integers(1, 4))):
                a = pred + int(rng.integers(0, 60))
                stays.append(stay(a, a + int(rng.integers(14, 41))))
                dx.append({"code": "I50.9", "date": day(a)})
                px.append({"code": "99223", "date": day(a)})
        pats.append({"patient_id": pid, "birth_date": day(birth), "sex": "FM"[int(rng.integers(0, 2))],
                     "diagnoses": dx, "prescriptions": rx, "procedures": px, "hospitalizations": stays})
        lab[pid], pred_of[pid] = y, pred
    return pats, lab, pred_of


def per_patient_stats(data: dict) -> dict[str, np.ndarray]:
    """{"<field> count|sum|max": [N]} for every tensor of a dataset dict (empty segments give 0)."""
    kinds = {k for k, v in data.items() if isinstance(v, torch.Tensor)}
    unknown = kinds - PER_TOKEN - PER_STAY - PER_PATIENT - INDEX - NOT_FEATURES
    assert not unknown, f"classify the new dataset fields {unknown} in tests/test_task_leak.py"
    out = {}
    for key in sorted(kinds - INDEX - NOT_FEATURES):
        v = data[key].numpy().astype(np.float64)
        if key in PER_PATIENT:
            out[key] = v
            continue
        offsets = data["offsets" if key in PER_TOKEN else "los_offsets"].numpy()
        sizes = np.diff(offsets)
        seg = np.repeat(np.arange(len(sizes)), sizes)
        mx = np.zeros(len(sizes))
        if len(v):
            np.maximum.at(mx, seg, v - v.min() + 1)                  # shifted so 0 means "no value"
        out[f"{key} count"] = sizes.astype(np.float64)
        out[f"{key} sum"] = np.bincount(seg, weights=v, minlength=len(sizes))
        out[f"{key} max"] = mx
    return out


def pooled(paths: dict, labels: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Statistics of every split, each computed within its split, then pooled; and the labels."""
    stats, y = [], []
    for s in ("train", "val", "test"):
        ds = PatientDataset.load(paths[s])
        stats.append(per_patient_stats(ds.data))
        y.append(np.array([labels[p] for p in ds.patient_ids]))
    return {k: np.concatenate([st[k] for st in stats]) for k in stats[0]}, np.concatenate(y)


def auroc(x: np.ndarray, y: np.ndarray) -> float:
    return float(roc_auc_score(y, x))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The cohort converted by both paths (JSONL columnar and per-record), with the task CSV."""
    root = tmp_path_factory.mktemp("leak")
    pats, labels, pred = make_cohort()
    src = root / "p.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pats))
    csv = root / "task.csv"
    csv.write_text("patient_id,label,prediction_date\n" + "".join(f"{p},{labels[p]},{day(pred[p])}\n" for p in labels))
    mans = {fast: convert_patients(src, root / str(fast) / "ds.pt", task_data=csv, fast=fast, progress=False)
            for fast in (True, False)}
    return root, pats, labels, pred, mans


def test_fixture_leaks_without_the_cut(converted):
    root, _, labels, _, _ = converted
    stats, y = pooled(output_paths(root / "True" / "ds.pt"), labels)  # pretraining: every stay, every code
    assert len(y) == N and 0.45 < y.mean() < 0.55
    assert auroc(stats["los_days max"], y) > 0.95           # the outcome stays are long
    assert auroc(stats["los_days sum"], y) > 0.9
    assert auroc(stats["los_days count"], y) > 0.75         # and extra
    assert auroc(stats["token_type_ids max"], y) > 0.95     # procedures are outcome codes only


def test_no_task_field_separates_the_labels(converted):
    root, _, labels, _, _ = converted
    stats, y = pooled(output_paths(root / "True" / "ds.pt", task=True), labels)
    n1 = int(y.sum())
    n0 = len(y) - n1
    assert len(y) == N  # nobody dropped (everyone has codes before the date), so the drop can't leak either
    bound = Z * np.sqrt((n0 + n1 + 1) / (12 * n0 * n1))
    assert 0.09 < bound < 0.12
    assert len(stats) >= 20
    scores = {k: auroc(v, y) for k, v in stats.items()}
    leaks = {k: round(a, 3) for k, a in scores.items() if abs(a - 0.5) > bound}
    assert not leaks, f"task fields separate the labels (|AUROC - 0.5| > {bound:.3f}): {leaks}"


def test_task_stays_are_as_known_on_the_prediction_date(converted):
    """Dropped when admitted on or after the date; truncated to (date - admission) when still open."""
    root, pats, labels, pred, mans = converted
    want = {}
    for p in pats:
        d = pred[p["patient_id"]]
        kept = []
        for h in p["hospitalizations"]:
            a = (dt.date.fromisoformat(h["admission_date"]) - EPOCH).days
            e = (dt.date.fromisoformat(h["discharge_date"]) - EPOCH).days
            if a < d:
                kept.append((a, min(e, d) - a))
        want[p["patient_id"]] = kept
    paths = output_paths(root / "True" / "ds.pt", task=True)
    dropped = truncated = 0
    for s in ("train", "val", "test"):
        ds = PatientDataset.load(paths[s])
        for i, pid in enumerate(ds.patient_ids):
            got = list(zip(ds.stay_starts(i).tolist(), ds.stays(i).tolist()))
            assert got == want[pid], pid
            assert int(ds.data["prediction_days"][i]) == pred[pid]
        cut = mans[True]["task"]["splits"][s]["stays_cut_at_prediction_date"]
        dropped, truncated = dropped + cut["dropped"], truncated + cut["truncated"]
    all_stays = [(h, pred[p["patient_id"]]) for p in pats for h in p["hospitalizations"]]
    adm = [((dt.date.fromisoformat(h["admission_date"]) - EPOCH).days, d) for h, d in all_stays]
    dis = [((dt.date.fromisoformat(h["discharge_date"]) - EPOCH).days, d) for h, d in all_stays]
    assert dropped == sum(a >= d for a, d in adm) > 0
    assert truncated == sum(a < d < e for (a, d), (e, _) in zip(adm, dis)) > 0


def test_both_conversion_paths_write_the_same_task_splits(converted):
    root, *_, mans = converted
    assert mans[True]["task"] == mans[False]["task"]
    a, b = output_paths(root / "True" / "ds.pt", task=True), output_paths(root / "False" / "ds.pt", task=True)
    for s in ("train", "val", "test"):
        da, db = torch.load(a[s], weights_only=True), torch.load(b[s], weights_only=True)
        assert da.keys() == db.keys() and "los_start_days" in da
        for k in da:
            assert torch.equal(da[k], db[k]) if isinstance(da[k], torch.Tensor) else da[k] == db[k], k


# -- MEDS labels with a prediction time: the prediction day's morning is in, nothing after the time --
NOON = 12 * 3600 * 1_000_000
US_DAY = 86_400_000_000


def meds_cohort(root, seed: int = 0):
    """The cohort as a MEDS root with times, and MEDS labels at noon of each prediction day. Every event
    of the JSON cohort on the prediction day or later is the outcome's (positives only): it is stamped
    at 13:00 on the prediction day, or later. Added: a label-independent morning code (08:00) for about
    half of the patients, and for positives an outcome code one microsecond after noon (MEDS keeps data up
    to and including the time) and a stay admitted at 13:00 that day."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pats, labels, pred = make_cohort(seed)
    rng = np.random.default_rng(seed + 1)
    rows = []   # (subject, microseconds, code)

    def at(d: str, pid: str, hour: int = 0) -> int:
        days = (dt.date.fromisoformat(d) - EPOCH).days
        return days * US_DAY + (13 * 3600 * 1_000_000 if days >= pred[pid] and hour == 0 else hour * 3600 * 1_000_000)

    morning = {}
    for p in pats:
        pid, sid = p["patient_id"], int(p["patient_id"][1:])
        rows += [(sid, at(p["birth_date"], pid), "MEDS_BIRTH"), (sid, at(p["birth_date"], pid), f"GENDER//{p['sex']}")]
        for key, vocab in (("diagnoses", "ICD10CM"), ("prescriptions", "ATC"), ("procedures", "CPT")):
            rows += [(sid, at(e["date"], pid), f"{vocab}//{e['code']}") for e in p[key]]
        for h in p["hospitalizations"]:
            rows += [(sid, at(h["admission_date"], pid), "HOSPITAL_ADMISSION//IP"),
                     (sid, at(h["discharge_date"], pid), "HOSPITAL_DISCHARGE//HOME")]
        morning[pid] = bool(rng.random() < 0.5)
        if morning[pid]:
            rows.append((sid, pred[pid] * US_DAY + 8 * 3600 * 1_000_000, "ICD10CM//R10.9"))
        if labels[pid]:   # the first instant after the prediction time; admitted an hour after it
            rows.append((sid, pred[pid] * US_DAY + NOON + 1, "ICD10CM//R57.0"))
            rows += [(sid, pred[pid] * US_DAY + NOON + 3600 * 1_000_000, "HOSPITAL_ADMISSION//IP"),
                     (sid, (pred[pid] + 20) * US_DAY, "HOSPITAL_DISCHARGE//HOME")]
    rows.sort()
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.table({"subject_id": pa.array([r[0] for r in rows], pa.int64()),
                             "time": pa.array([r[1] for r in rows], pa.timestamp("us")),
                             "code": [r[2] for r in rows]}), root / "data" / "0.parquet")
    pids = sorted(labels)
    pq.write_table(pa.table({"subject_id": pa.array([int(p[1:]) for p in pids], pa.int64()),
                             "prediction_time": pa.array([pred[p] * US_DAY + NOON for p in pids], pa.timestamp("us")),
                             "boolean_value": [bool(labels[p]) for p in pids]}), root / "labels.parquet")
    return {str(int(p[1:])): labels[p] for p in pids}, {str(int(p[1:])): morning[p] for p in pids}


@pytest.fixture(scope="module")
def converted_meds(tmp_path_factory):
    root = tmp_path_factory.mktemp("leak_meds")
    labels, morning = meds_cohort(root / "meds")
    convert_patients(root / "meds", root / "out" / "ds.pt", task_data=root / "meds" / "labels.parquet",
                     progress=False)
    return root, labels, morning


def test_meds_labels_no_task_field_separates_the_labels(converted_meds):
    root, labels, _ = converted_meds
    full, y = pooled(output_paths(root / "out" / "ds.pt"), labels)
    assert auroc(full["los_days max"], y) > 0.95 and auroc(full["token_type_ids max"], y) > 0.95   # power
    stats, y = pooled(output_paths(root / "out" / "ds.pt", task=True), labels)
    assert len(y) == N
    n1 = int(y.sum())
    bound = Z * np.sqrt((len(y) + 1) / (12 * (len(y) - n1) * n1))
    leaks = {k: round(a, 3) for k, v in stats.items() if abs((a := auroc(v, y)) - 0.5) > bound}
    assert not leaks, f"task fields separate the labels (|AUROC - 0.5| > {bound:.3f}): {leaks}"


def test_meds_labels_keep_the_prediction_days_morning(converted_meds):
    """The morning code (08:00, before the noon prediction time) is in the task split exactly for the
    patients who have it, so the no-leak test above is not passing by dropping the whole day."""
    from exmed_bert.data.vocab import Vocab

    root, labels, morning = converted_meds
    vocab = Vocab.load(root / "out" / "vocab.json")
    r10, r57 = vocab.id("icd10cm:R10.9"), vocab.id("icd10cm:R57.0")
    for s, path in output_paths(root / "out" / "ds.pt", task=True).items():
        if s not in ("train", "val", "test"):
            continue
        ds = PatientDataset.load(path)
        for i, pid in enumerate(ds.patient_ids):
            ids = ds[i]["input_ids"].tolist()
            assert (r10 in ids) == morning[pid], pid
            assert r57 not in ids, pid   # just after the prediction time: out
