"""predictions.parquet: the MEDS prediction schema, checked with the `meds` package, beside predictions.csv."""

import csv
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.cli.convert import main as convert_main
from exmed_bert.convert.labels import US_PER_DAY
from exmed_bert.evaluation.outputs import evaluate_and_write
from exmed_bert.tasks import load_task_splits, task_prediction_times

meds = pytest.importorskip("meds")  # requirements-dev.txt
PredictionSchema = pytest.importorskip("meds_evaluation.schema").PredictionSchema  # requirements-dev.txt

T = dt.datetime.fromisoformat


def check_meds_prediction_schema(table: pa.Table) -> None:
    """The label columns against meds.LabelSchema, and the whole table against meds-evaluation's strict
    PredictionSchema.validate, as it is (no cast): int64 subject ids, float32 probabilities."""
    meds.LabelSchema.validate(table.select(["subject_id", "prediction_time", "boolean_value"]))
    PredictionSchema.validate(table)
    assert table.schema.field("predicted_boolean_value").type == pa.bool_()
    assert table.schema.field("predicted_boolean_probability").type == pa.float32()


def test_binary_run_writes_valid_meds_predictions(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.6 * y + 0.4 * rng.random(60), 0, 1)
    ids = [str(1000 + i) for i in range(60)]
    times = np.array([(T("2021-06-01 13:45") - T("1970-01-01")) // dt.timedelta(microseconds=1) + i
                      for i in range(60)], dtype=np.int64)
    doc = evaluate_and_write(tmp_path, "m", test_ids=ids, y_test=y, p_test=p, y_val=y, p_val=p, n_bootstrap=20,
                             prediction_times=times)
    table = pq.read_table(tmp_path / "predictions.parquet")
    check_meds_prediction_schema(table)
    assert table["subject_id"].to_pylist() == [int(i) for i in ids]
    assert table["prediction_time"].to_pylist()[0] == T("2021-06-01 13:45")
    assert table["boolean_value"].to_pylist() == [bool(v) for v in y]
    with open(tmp_path / "predictions.csv") as f:
        csv_p = [float(r["probability"]) for r in csv.DictReader(f)]
    # the same numbers as the CSV's full-precision ones, rounded to float32 as the MEDS schema wants them
    assert table["predicted_boolean_probability"].to_pylist() == np.float32(csv_p).tolist()
    threshold = doc["threshold"]
    assert table["predicted_boolean_value"].to_pylist() == [v >= threshold for v in csv_p]
    assert 0 < sum(table["predicted_boolean_value"].to_pylist()) < 60


def test_subject_ids_are_always_int64_and_ids_without_one_get_no_file(tmp_path, capsys):
    """MEDS subject ids are int64: the generator's P0042 is subject 42 (as its MEDS root writes it); ids with
    no number, or two ids with one number, get predictions.csv and no predictions.parquet, never a string
    subject_id that meds-evaluation would refuse."""
    y, p = np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.7, 0.4])
    evaluate_and_write(tmp_path / "g", "m", test_ids=["P0001", "P0042", "P0003", "P0004"], y_test=y, p_test=p,
                       y_val=y, p_val=p, n_bootstrap=10, prediction_times=[0, 1, 2, 3])
    table = pq.read_table(tmp_path / "g" / "predictions.parquet")
    check_meds_prediction_schema(table)
    assert table["subject_id"].to_pylist() == [1, 42, 3, 4]
    for name, ids in (("words", ["A", "B", "C", "D"]), ("clash", ["P7", "Q7", "P1", "P2"])):
        evaluate_and_write(tmp_path / name, "m", test_ids=ids, y_test=y, p_test=p, y_val=y, p_val=p,
                           n_bootstrap=10, prediction_times=[0, 1, 2, 3])
        assert (tmp_path / name / "predictions.csv").is_file()
        assert not (tmp_path / name / "predictions.parquet").exists(), name
    assert "no predictions.parquet: the patient ids have no MEDS subject id" in capsys.readouterr().out
    y3, p3 = np.array([0, 1, 2, 1]), np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.2 / 3
    evaluate_and_write(tmp_path / "m", "m", test_ids=["1", "2", "3", "4"], y_test=y3, p_test=p3, y_val=y3,
                       p_val=p3, n_bootstrap=10, prediction_times=[0, 1, 2, 3])
    assert (tmp_path / "m" / "predictions.csv").is_file()
    assert not (tmp_path / "m" / "predictions.parquet").exists()


def test_prediction_times_come_from_the_task_data(tmp_path):
    """A run's provenance leads to the MEDS labels' own prediction_time; a task CSV gives its date at 00:00."""
    events = [(s, "2019-0%d-01 10:00" % (1 + s % 9), "ICD10CM//I10") for s in range(1, 9)]
    (tmp_path / "meds").mkdir()
    pq.write_table(pa.table({"subject_id": pa.array([e[0] for e in events], pa.int64()),
                             "time": pa.array([T(e[1]) for e in events], pa.timestamp("us")),
                             "code": [e[2] for e in events]}), tmp_path / "meds" / "0.parquet")
    when = [T("2020-02-02 07:30") + dt.timedelta(hours=s) for s in range(1, 9)]
    # subject 2 has a second prediction time, a day later: a second task row
    pq.write_table(pa.table({"subject_id": pa.array([*range(1, 9), 2], pa.int64()),
                             "prediction_time": pa.array([*when, when[1] + dt.timedelta(days=1)], pa.timestamp("us")),
                             "boolean_value": [s % 2 == 0 for s in range(1, 9)] + [False]}), tmp_path / "labels.parquet")
    data = tmp_path / "data"
    assert convert_main(["--input", str(tmp_path / "meds"), "--output", str(data / "m.pt"),
                         "--task-data", str(tmp_path / "labels.parquet"), "--train-ratio", "0.999999"]) == 0
    splits, _, source = load_task_splits(data, tmp_path / "labels.parquet", num_labels=2, output_dir=tmp_path / "o")
    assert source["label_column"] == "boolean_value"
    source = {**source, "task_datasets": {"test": source["task_datasets"]["train"]}}  # every patient is in train
    ids = splits["train"].patient_ids
    assert sorted(ids) == ["1", "2", "2", "3", "4", "5", "6", "7", "8"]
    got = [T("1970-01-01") + dt.timedelta(microseconds=int(u)) for u in task_prediction_times(source, ids)]
    assert got == [when[int(i) - 1] + dt.timedelta(days=int(i == "2" and ids[:k].count("2") == 1))
                   for k, i in enumerate(ids)]
    y = splits["train"].data["labels"].numpy()
    evaluate_and_write(tmp_path / "run", "m", test_ids=list(ids), y_test=y, p_test=np.linspace(0.1, 0.9, len(ids)),
                       y_val=y, p_val=np.linspace(0.1, 0.9, len(ids)), n_bootstrap=10,
                       prediction_times=task_prediction_times(source, ids))
    table = pq.read_table(tmp_path / "run" / "predictions.parquet")   # one row per (subject, prediction time)
    check_meds_prediction_schema(table)
    assert sorted(zip(table["subject_id"].to_pylist(), table["prediction_time"].to_pylist()))[1:3] == [
        (2, when[1]), (2, when[1] + dt.timedelta(days=1))]
    # predictions.csv tells subject 2's rows apart by their time, and the report joins runs by both
    from exmed_bert.evaluation.report import align, load_run

    with open(tmp_path / "run" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["prediction_time"] for r in rows if r["patient_id"] == "2"] == sorted(
        t.isoformat() for t in (when[1], when[1] + dt.timedelta(days=1)))
    back = np.arange(len(ids))[::-1]   # a second run that wrote the same rows in another order
    evaluate_and_write(tmp_path / "run2", "m2", test_ids=[ids[i] for i in back], y_test=y[back],
                       p_test=np.linspace(0.1, 0.9, len(ids))[back], y_val=y, p_val=np.linspace(0.1, 0.9, len(ids)),
                       n_bootstrap=10, prediction_times=task_prediction_times(source, ids)[back])
    keys, labels, probs = align([load_run(tmp_path / "run"), load_run(tmp_path / "run2")])
    assert len(set(keys)) == len(ids) and np.array_equal(probs[0], probs[1]) and np.array_equal(labels, y)

    (tmp_path / "task.csv").write_text("patient_id,label,prediction_date\n"
                                       + "".join(f"{s},{s % 2},2020-02-02\n" for s in range(1, 9)))
    splits, _, source = load_task_splits(data, tmp_path / "task.csv", num_labels=2, output_dir=tmp_path / "o2")
    source = {**source, "task_datasets": {"test": source["task_datasets"]["train"]}}
    day = (dt.date(2020, 2, 2) - dt.date(1970, 1, 1)).days
    assert task_prediction_times(source, splits["train"].patient_ids).tolist() == [day * US_PER_DAY] * 8
