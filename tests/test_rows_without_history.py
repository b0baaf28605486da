"""Every label row gets a prediction: a row whose subject has no event before its time is kept as a
[CLS]-only row and scored from age and sex, end to end (conversion, train-rf, train-logreg, fine-tuning,
predictions.csv / predictions.parquet, metrics.json, the report's header), for MEDS labels and a task CSV."""

import csv
import datetime as dt
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from exmed_bert.cli import baselines
from exmed_bert.cli.compare import main as compare_main
from exmed_bert.cli.convert import main as convert_main
from exmed_bert.cli.finetune import main as finetune_main
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.layout import meds_subject_ids
from exmed_bert.data.vocab import Vocab

from test_baselines import make_patients, write_task_csv
from test_finetune import tiny_pretrained

PRED = dt.date(2021, 1, 1)          # make_patients' prediction date
N = 80
NO_HISTORY = {i for i in range(N) if i % 10 in (0, 2)}   # 8 held out (i % 5 == 0), 8 in train
IN_NO_SPLIT = 79                    # a subject of the data left out of subject_splits.parquet
NOT_IN_DATA = 9999


def split_of(i: int) -> str:
    return "held_out" if i % 5 == 0 else "tuning" if i % 5 == 1 else "train"


def without_history(patients):
    """The NO_HISTORY patients with every event moved to after the prediction date (their history empty)."""
    for i in NO_HISTORY:
        p = patients[i]
        for kind in ("diagnoses", "prescriptions", "procedures"):
            for e in p[kind]:
                if dt.date.fromisoformat(e["date"]) < PRED:
                    e["date"] = (PRED + dt.timedelta(days=400 + random.Random(i).randint(0, 30))).isoformat()
    return patients


def write_meds(patients, labels, root):
    """patients as a MEDS root (events at noon, splits by `split_of` less IN_NO_SPLIT) and its labels at the
    prediction date's midnight; plus a row for a subject not in the data and a row with a null label."""
    systems = {"diagnoses": "ICD10CM", "prescriptions": "ATC", "procedures": "CPT"}
    rows = []
    for i, p in enumerate(patients):
        rows.append((i, dt.datetime.fromisoformat(p["birth_date"]), "MEDS_BIRTH"))
        rows.append((i, None, f"GENDER//{p['sex']}"))
        for kind, system in systems.items():
            rows += [(i, dt.datetime.fromisoformat(e["date"]) + dt.timedelta(hours=12), f"{system}//{e['code']}")
                     for e in p[kind]]
    rows.sort(key=lambda r: (r[0], r[1] or dt.datetime.min))
    (root / "data" / "train").mkdir(parents=True)
    (root / "metadata").mkdir()
    pq.write_table(pa.table({"subject_id": pa.array([r[0] for r in rows], pa.int64()),
                             "time": pa.array([r[1] for r in rows], pa.timestamp("us")),
                             "code": pa.array([r[2] for r in rows], pa.string())}), root / "data" / "train" / "0.parquet")
    kept = [i for i in range(N) if i != IN_NO_SPLIT]
    pq.write_table(pa.table({"subject_id": pa.array(kept, pa.int64()), "split": [split_of(i) for i in kept]}),
                   root / "metadata" / "subject_splits.parquet")
    midnight = dt.datetime.combine(PRED, dt.time())
    ids = list(range(N)) + [NOT_IN_DATA, 3]
    values = [bool(y) for _, y, _ in labels] + [True, None]   # subject 3's second row: a null label (bad)
    when = [midnight] * (N + 1) + [midnight + dt.timedelta(days=1)]
    path = root.parent / "labels" / "0.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"subject_id": pa.array(ids, pa.int64()),
                             "prediction_time": pa.array(when, pa.timestamp("us")),
                             "boolean_value": pa.array(values, pa.bool_())}), path)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nohist")
    patients, labels = make_patients(N, seed=3)
    patients = without_history(patients)
    labels_path = write_meds(patients, labels, tmp / "meds")
    assert convert_main(["--input", str(tmp / "meds"), "--output", str(tmp / "meds_data" / "m.pt"),
                         "--task-data", str(labels_path)]) == 0
    pj = tmp / "patients.json"
    pj.write_text(json.dumps({"patients": patients}))
    task_csv = tmp / "task.csv"
    write_task_csv(task_csv, labels)
    assert convert_main(["--input", str(pj), "--output", str(tmp / "csv_data" / "c.pt"), "--task-data",
                         str(task_csv), "--seed", "1"]) == 0
    return {"tmp": tmp, "labels": labels_path, "task_csv": task_csv, "y": {f"{i}": y for i, (_, y, _) in
                                                                         enumerate(labels)},
            "pid": {p["patient_id"]: i for i, p in enumerate(patients)}}


def task_split(folder, split):
    return PatientDataset.load(next(folder.glob(f"*_task_{split}.pt")))


def lengths(ds):
    return torch.diff(ds.data["offsets"]).tolist()


def test_the_conversion_keeps_every_row_of_a_subject_in_the_data(cohort):
    data = cohort["tmp"] / "meds_data"
    rows = json.loads((data / "dataset_manifest.json").read_text())["task"]["label_rows"]
    assert rows == {"read": N + 2, "kept": N - 1 - len(NO_HISTORY), "kept_without_history": len(NO_HISTORY),
                    "subject_not_in_data": 1, "subject_in_no_split": 1, "bad": 1,
                    "bad_reasons": {"missing label": 1}}
    splits = {s: task_split(data, s) for s in ("train", "val", "test")}
    assert sum(len(ds) for ds in splits.values()) == rows["kept"] + rows["kept_without_history"] == \
        rows["read"] - rows["bad"] - rows["subject_not_in_data"] - rows["subject_in_no_split"]
    test = splits["test"]
    assert sorted(test.patient_ids, key=int) == [str(i) for i in range(N) if split_of(i) == "held_out"]
    vocab = Vocab.load(data / "vocab.json")
    for ds in splits.values():
        for pid, n, sex, row in zip(ds.patient_ids, lengths(ds), ds.data["sex"].tolist(), range(len(ds))):
            assert (n == 1) == (int(pid) in NO_HISTORY), pid   # [CLS] alone exactly for the rows without history
            if n == 1:
                assert vocab.token(int(ds[row]["input_ids"][0])) == "[CLS]"
                assert 0 < int(ds[row]["age_ids"][0]) < 120 and sex != 0   # age and sex known

    for split in ("train", "val", "test"):   # pretraining (and so masking) never sees a [CLS]-only row
        assert min(lengths(PatientDataset.load(data / f"m_{split}.pt"))) >= 3

    csv_data = cohort["tmp"] / "csv_data"
    manifest = json.loads((csv_data / "dataset_manifest.json").read_text())["task"]["label_rows"]
    assert manifest["kept_without_history"] == len(NO_HISTORY) and manifest["kept"] == N - len(NO_HISTORY)
    ids = [pid for s in ("train", "val", "test") for pid in task_split(csv_data, s).patient_ids]
    assert sorted(ids) == sorted(cohort["pid"])   # every patient of the task CSV, once


def predictions(out):
    with open(out / "predictions.csv") as f:
        return list(csv.DictReader(f))


def check_run(out, test, y, n_without):
    """predictions.csv, predictions.parquet and metrics.json cover every test row, rows without history too."""
    doc = json.loads((out / "metrics.json").read_text())
    rows = predictions(out)
    assert doc["n"] == len(rows) == len(test) and doc["n_without_history"] == n_without > 0
    assert sorted(r["patient_id"] for r in rows) == sorted(test.patient_ids)
    assert all(int(r["label"]) == y[r["patient_id"]] for r in rows)
    table = pq.read_table(out / "predictions.parquet")
    assert table.num_rows == len(test)
    assert sorted(table["subject_id"].to_pylist()) == sorted(meds_subject_ids(test.patient_ids))   # P0042 -> 42
    return doc, rows


@pytest.mark.parametrize("which", ["meds", "csv"])
def test_baselines_and_fine_tuning_predict_every_test_row(cohort, tmp_path, which):
    data = cohort["tmp"] / f"{which}_data"
    task = cohort["labels"] if which == "meds" else cohort["task_csv"]
    test = task_split(data, "test")
    if which == "meds":
        y = cohort["y"]
        n_without = sum(int(p) in NO_HISTORY for p in test.patient_ids)
    else:
        y = {p: cohort["y"][str(i)] for p, i in cohort["pid"].items()}
        n_without = sum(cohort["pid"][p] in NO_HISTORY for p in test.patient_ids)
    assert n_without == sum(n == 1 for n in lengths(test))
    common = ["--data-dir", str(data), "--task-data", str(task), "--n-bootstrap", "20"]
    runs = []
    for name, extra in (("main_rf", ["--n-estimators", "20", "--n-jobs", "1"]), ("main_logreg", [])):
        out = tmp_path / name
        assert getattr(baselines, name)([*common, "--output-dir", str(out), *extra]) == 0
        doc, rows = check_run(out, test, y, n_without)
        assert not (out / "task_rejected.csv").exists() or which == "meds"
        runs.append(out)
    # a row without history is scored from age and sex alone: its features are all-zero counts
    rf_rows = {r["patient_id"]: float(r["probability"]) for r in predictions(tmp_path / "main_rf")}
    assert all(0.0 <= p <= 1.0 for p in rf_rows.values())

    out = tmp_path / "ft"
    model = tiny_pretrained(tmp_path / "pretrained", Vocab.load(data / "vocab.json"))
    assert finetune_main(["--model-path", str(model), *common, "--output-dir", str(out), "--num-epochs", "1",
                          "--batch-size", "8", "--device", "cpu"]) == 0
    check_run(out, test, y, n_without)
    runs.append(out)

    report = tmp_path / "report" / "report.md"
    assert compare_main(["--runs", *map(str, runs), "--output", str(report), "--n-bootstrap", "20"]) == 0
    head = report.read_text().splitlines()[2]
    assert f"{n_without} of them with no event before their prediction time" in head, head
    assert json.loads(report.with_suffix(".json").read_text())["n_test_without_history"] == n_without


@pytest.mark.parametrize("features", ["counts", "windows", "windows_order"])
def test_a_cls_only_row_has_all_zero_code_features_and_known_age_and_sex(features):
    from exmed_bert.baselines.features import featurize

    # [CLS] 5 6 [SEP] | [CLS] alone (no history, on its prediction day 18262) | [CLS] 7 [SEP]
    data = {"input_ids": torch.tensor([2, 5, 6, 3, 2, 2, 7, 3], dtype=torch.int32),
            "age_ids": torch.tensor([50] * 4 + [40] + [30] * 3, dtype=torch.int16),
            "days": torch.tensor([18000] * 4 + [18262] + [18100] * 3, dtype=torch.int32),
            "offsets": torch.tensor([0, 4, 5, 8]), "sex": torch.tensor([1, 2, 1], dtype=torch.int8),
            "birth_days": torch.tensor([0, 3652, 7305], dtype=torch.int32),
            "prediction_days": torch.tensor([18262] * 3, dtype=torch.int32)}
    pairs = (torch.tensor([5]).numpy(), torch.tensor([6]).numpy())
    X = featurize(data, vocab_size=8, features=features, pairs=pairs).toarray()
    assert X.shape[0] == 3
    assert not X[1, :-3].any() and X[0, :-3].any() and X[2, :-3].any()   # codes: nothing for the empty row
    assert X[1, -3] == pytest.approx((18262 - 3652) / 365.25) and X[1, -2:].tolist() == [0, 1]   # age, sex M
