"""MEDS label files as --task-data: schema checks, label columns, one prediction time per subject, and the
prediction-time cut (nothing on the prediction day, before or after the time, reaches the task split)."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.cli.convert import main as convert_main
from exmed_bert.convert.labels import US_PER_DAY, read_task_csv
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError

T = dt.datetime.fromisoformat


def labels_file(path, ids, times, **values):
    cols = {"subject_id": pa.array(ids, pa.int64()), "prediction_time": pa.array(times, pa.timestamp("us"))}
    cols.update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


def test_boolean_labels_give_label_day_and_exact_time(tmp_path):
    f = labels_file(tmp_path / "labels.parquet", [7, 8], [T("2020-03-05 12:30"), T("2021-01-01 00:00")],
                    boolean_value=pa.array([True, False]))
    table = read_task_csv(f)
    assert table.labels() == {"7": 1, "8": 0}
    r = table.rows["7"]
    assert r.prediction_day == (dt.date(2020, 3, 5) - dt.date(1970, 1, 1)).days
    assert r.prediction_time == r.prediction_day * US_PER_DAY + (12 * 3600 + 30 * 60) * 1_000_000
    assert table.label_column == "boolean_value" and table.classes is None


def test_folder_with_the_full_meds_label_schema(tmp_path):
    """MEDS writers fill one value column and leave the others null; a folder's files are read together."""
    for k, (ids, ys) in enumerate((([1, 2], [0, 2]), ([3], [1]))):
        n = len(ids)
        labels_file(tmp_path / "labels" / f"part_{k}.parquet", ids, [T("2020-01-01")] * n,
                    boolean_value=pa.array([None] * n, pa.bool_()), integer_value=pa.array(ys, pa.int64()),
                    float_value=pa.array([None] * n, pa.float32()), categorical_value=pa.array([None] * n, pa.string()))
    table = read_task_csv(tmp_path / "labels")
    assert table.labels() == {"1": 0, "2": 2, "3": 1} and table.label_column == "integer_value"
    with pytest.raises(UserError, match=r"row 2: integer_value 2 .*out of range 0\.\.1"):
        read_task_csv(tmp_path / "labels", num_labels=2)
    skipped = read_task_csv(tmp_path / "labels", num_labels=2, on_error="skip")
    assert skipped.labels() == {"1": 0, "3": 1} and [r[0] for r in skipped.rejected] == [2]


def test_categories_map_to_sorted_class_ids(tmp_path):
    f = labels_file(tmp_path / "l.parquet", [1, 2, 3, 4], [T("2020-01-01")] * 4,
                    categorical_value=pa.array(["mild", "severe", "none", "mild"]))
    table = read_task_csv(f)
    assert table.classes == ["mild", "none", "severe"]
    assert table.labels() == {"1": 0, "2": 2, "3": 1, "4": 0}


@pytest.mark.parametrize("cols, match", [
    ({"subject_id": pa.array([1]), "boolean_value": pa.array([True])}, "no column prediction_time"),
    ({"patient_id": pa.array([1.5]), "prediction_time": pa.array([T("2020-01-01")]), "boolean_value": pa.array([True])},
     "column subject_id is double"),   # an older MEDS name is checked as the current one
    ({"subject_id": pa.array([1]), "prediction_time": pa.array(["2020-01-01"]), "boolean_value": pa.array([True])},
     "column prediction_time is string"),
    ({"subject_id": pa.array([1.5]), "prediction_time": pa.array([T("2020-01-01")]), "boolean_value": pa.array([True])},
     "column subject_id is double"),
    ({"subject_id": pa.array([1]), "prediction_time": pa.array([T("2020-01-01")]), "boolean_value": pa.array([1])},
     "column boolean_value is int64; MEDS wants bool"),
    ({"subject_id": pa.array([1]), "prediction_time": pa.array([T("2020-01-01")]),
      "float_value": pa.array([0.5], pa.float32())}, "regression labels are not supported"),
    ({"subject_id": pa.array([1]), "prediction_time": pa.array([T("2020-01-01")]), "boolean_value": pa.array([True]),
      "integer_value": pa.array([1])}, "boolean_value and integer_value both have values"),
])
def test_bad_schema_is_one_line_naming_file_and_column(tmp_path, cols, match):
    f = tmp_path / "bad.parquet"
    pq.write_table(pa.table(cols), f)
    with pytest.raises(UserError, match=match) as e:
        read_task_csv(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


def test_not_parquet_and_empty_folder(tmp_path):
    (tmp_path / "x.parquet").write_text("patient_id,label\n1,0\n")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        read_task_csv(tmp_path / "x.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .parquet files"):
        read_task_csv(tmp_path / "empty")


def test_several_prediction_times_per_subject_are_refused(tmp_path):
    f = labels_file(tmp_path / "l.parquet", [1, 5, 5, 5], [T("2020-01-01"), T("2020-01-01"), T("2020-02-01"),
                                                           T("2020-03-01")], boolean_value=pa.array([True] * 4))
    with pytest.raises(UserError, match="subject 5 has 3 label rows .*keep one row per subject"):
        read_task_csv(f, on_error="skip")


def test_null_label_rows_are_rejects(tmp_path):
    f = labels_file(tmp_path / "l.parquet", [1, 2], [T("2020-01-01"), None], boolean_value=pa.array([True, False]))
    with pytest.raises(UserError, match=r"l.parquet: row 2: missing prediction_time"):
        read_task_csv(f)
    assert read_task_csv(f, on_error="skip").labels() == {"1": 1}


# subject 1: C the day before, A (08:00) and B (20:00) on the prediction day, prediction_time 12:00
EVENTS = [(1, "1970-05-05", "MEDS_BIRTH"), (1, "2020-03-04 09:00", "ICD10CM//C50"),
          (1, "2020-03-05 08:00", "ICD10CM//A01"), (1, "2020-03-05 20:00", "ICD10CM//B20"),
          (2, "1980-01-01", "MEDS_BIRTH"), (2, "2019-01-01", "ICD10CM//C50"), (2, "2019-06-01", "ICD10CM//B20")]


def test_nothing_on_the_prediction_day_reaches_the_task_split(tmp_path):
    (tmp_path / "meds" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"subject_id": pa.array([e[0] for e in EVENTS], pa.int64()),
                             "time": pa.array([T(e[1]) for e in EVENTS], pa.timestamp("us")),
                             "code": pa.array([e[2] for e in EVENTS])}), tmp_path / "meds" / "data" / "0.parquet")
    labels = labels_file(tmp_path / "labels" / "task.parquet", [1, 2], [T("2020-03-05 12:00"), T("2020-01-01")],
                         categorical_value=pa.array(["yes", "no"]))
    out = tmp_path / "out"
    assert convert_main(["--input", str(tmp_path / "meds"), "--output", str(out / "m.pt"), "--task-data", str(labels),
                         "--train-ratio", "0.999999"]) == 0
    vocab = Vocab.load(out / "vocab.json")
    full = PatientDataset.load(out / "m_train.pt")
    task = PatientDataset.load(out / "m_task_train.pt")

    def codes(ds, pid):
        return {vocab.token(t) for t in ds[ds.patient_ids.index(pid)]["input_ids"].tolist()}

    assert {"icd10cm:A01", "icd10cm:B20", "icd10cm:C50"} <= codes(full, "1")  # pretraining sees everything
    assert "icd10cm:C50" in codes(task, "1")
    assert "icd10cm:B20" not in codes(task, "1")  # after the prediction time: never in the task split
    assert "icd10cm:A01" not in codes(task, "1")  # same day, before the time: dropped too (day-level cut)
    assert codes(task, "2") >= {"icd10cm:C50", "icd10cm:B20"}
    assert task.data["labels"].tolist() == [{"1": 1, "2": 0}[p] for p in task.patient_ids]  # no < yes
    man = json.loads((out / "dataset_manifest.json").read_text())
    assert man["task"]["label_classes"] == {"no": 0, "yes": 1}
