"""MEDS label files as --task-data: schema checks, label columns, several prediction times per subject, and the
prediction-time cut (what happened before the prediction time, that day included, reaches the task split;
nothing at or after it)."""

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


def subject_labels(table) -> dict:
    """{subject id: label} of a MEDS label table with one row per subject (its rows are keyed by
    subject and prediction time)."""
    return {r.patient_id: r.label for r in table.rows.values()}


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
    assert subject_labels(table) == {"7": 1, "8": 0}
    r = next(r for r in table.rows.values() if r.patient_id == "7")
    assert table.labels()[f"7@{r.prediction_time}"] == 1
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
    assert subject_labels(table) == {"1": 0, "2": 2, "3": 1} and table.label_column == "integer_value"
    with pytest.raises(UserError, match=r"row 2: integer_value 2 .*out of range 0\.\.1"):
        read_task_csv(tmp_path / "labels", num_labels=2)
    skipped = read_task_csv(tmp_path / "labels", num_labels=2, on_error="skip")
    assert subject_labels(skipped) == {"1": 0, "3": 1} and [r[0] for r in skipped.rejected] == [2]


def test_categories_map_to_sorted_class_ids(tmp_path):
    f = labels_file(tmp_path / "l.parquet", [1, 2, 3, 4], [T("2020-01-01")] * 4,
                    categorical_value=pa.array(["mild", "severe", "none", "mild"]))
    table = read_task_csv(f)
    assert table.classes == ["mild", "none", "severe"]
    assert subject_labels(table) == {"1": 0, "2": 2, "3": 1, "4": 0}


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


def test_several_prediction_times_per_subject_are_task_rows(tmp_path):
    f = labels_file(tmp_path / "l.parquet", [1, 5, 5, 5, 5], [T("2020-01-01"), T("2020-03-01"), T("2020-01-01"),
                                                              T("2020-02-01"), T("2020-01-01")],
                    boolean_value=pa.array([True, False, True, False, False]))
    table = read_task_csv(f, on_error="skip")
    times = {t: int((T(t) - T("1970-01-01")).total_seconds()) * 1_000_000 for t in ("2020-01-01", "2020-02-01",
                                                                                  "2020-03-01")}
    assert table.by_patient() == {"1": [(1, 18262, times["2020-01-01"])],
                                  "5": [(1, 18262, times["2020-01-01"]), (0, 18293, times["2020-02-01"]),
                                        (0, 18322, times["2020-03-01"])]}   # in time order
    assert table.rejected == [(5, "5", "duplicate prediction_time for this subject (first on row 3)")]
    with pytest.raises(UserError, match="row 5: duplicate prediction_time for this subject"):
        read_task_csv(f)


def test_null_label_rows_are_rejects(tmp_path):
    f = labels_file(tmp_path / "l.parquet", [1, 2], [T("2020-01-01"), None], boolean_value=pa.array([True, False]))
    with pytest.raises(UserError, match=r"l.parquet: row 2: missing prediction_time"):
        read_task_csv(f)
    assert subject_labels(read_task_csv(f, on_error="skip")) == {"1": 1}


# subject 1, prediction_time 2020-03-05 12:00: C50 the day before; on the prediction day A01 at 08:00, Z99 at
# 12:00 (at the time) and B20 at 20:00; a stay from 2020-03-02 to 2020-03-07 (open at the time) and one admitted
# at 09:00 that day. Subject 2, prediction_time 2020-01-01 00:00: events of 2019 and one at that midnight.
EVENTS = [(1, "1970-05-05", "MEDS_BIRTH"), (1, "2020-03-04 09:00", "ICD10CM//C50"),
          (1, "2020-03-05 08:00", "ICD10CM//A01"), (1, "2020-03-05 12:00", "ICD10CM//Z99"),
          (1, "2020-03-05 20:00", "ICD10CM//B20"),
          (1, "2020-03-02 10:00", "HOSPITAL_ADMISSION//IP"), (1, "2020-03-07 10:00", "HOSPITAL_DISCHARGE//HOME"),
          (1, "2020-03-05 09:00", "HOSPITAL_ADMISSION//IP"), (1, "2020-03-09 10:00", "HOSPITAL_DISCHARGE//HOME"),
          (2, "1980-01-01", "MEDS_BIRTH"), (2, "2019-01-01", "ICD10CM//C50"), (2, "2019-06-01", "ICD10CM//B20"),
          (2, "2020-01-01 00:00", "ICD10CM//A01")]
DAY = (dt.date(2020, 3, 5) - dt.date(1970, 1, 1)).days   # subject 1's prediction day


def convert_with_labels(tmp_path, time_type=pa.timestamp("us"), *extra):
    (tmp_path / "meds" / "data").mkdir(parents=True)
    times = pa.array([T(e[1]) for e in EVENTS], pa.timestamp("us")).cast(time_type)
    pq.write_table(pa.table({"subject_id": pa.array([e[0] for e in EVENTS], pa.int64()), "time": times,
                             "code": pa.array([e[2] for e in EVENTS])}), tmp_path / "meds" / "data" / "0.parquet")
    labels = labels_file(tmp_path / "labels" / "task.parquet", [1, 2], [T("2020-03-05 12:00"), T("2020-01-01")],
                         categorical_value=pa.array(["yes", "no"]))
    out = tmp_path / "out"
    assert convert_main(["--input", str(tmp_path / "meds"), "--output", str(out / "m.pt"), "--task-data", str(labels),
                         "--train-ratio", "0.999999", *extra]) == 0
    return out, Vocab.load(out / "vocab.json")


def codes(ds, vocab, pid):
    return {vocab.token(t) for t in ds[ds.patient_ids.index(pid)]["input_ids"].tolist()} - set(vocab.tokens[:5])


def test_the_task_split_keeps_what_happened_at_or_before_the_prediction_time(tmp_path):
    """MEDS reads a label as "data up to and including prediction_time": an event at the time is in, one
    after it is not (this rule replaced one that left out events at the time)."""
    out, vocab = convert_with_labels(tmp_path)
    full = PatientDataset.load(out / "m_train.pt")
    task = PatientDataset.load(out / "m_task_train.pt")
    assert codes(full, vocab, "1") == {"icd10cm:C50", "icd10cm:A01", "icd10cm:Z99", "icd10cm:B20"}  # pretraining
    assert codes(task, vocab, "1") == {"icd10cm:C50", "icd10cm:A01", "icd10cm:Z99"}   # before and at 12:00: kept
    assert codes(task, vocab, "2") == {"icd10cm:C50", "icd10cm:B20", "icd10cm:A01"}   # at the time (midnight): kept
    i = task.patient_ids.index("1")
    # the first day after the history: the day after the prediction day, whose events up to the time are in it
    pred = dict(zip(task.patient_ids, task.data["prediction_days"].tolist()))
    assert pred == {"1": DAY + 1, "2": (dt.date(2020, 1, 1) - dt.date(1970, 1, 1)).days + 1}
    # stays as known on the prediction day: the open one truncated to 3 days, the one admitted that day left out
    # (stays carry days: whether it began before the time is not known)
    lo, hi = task.data["los_offsets"][i : i + 2].tolist()
    assert task.data["los_days"][lo:hi].tolist() == [3]
    assert task.data["labels"].tolist() == [{"1": 1, "2": 0}[p] for p in task.patient_ids]  # no < yes
    man = json.loads((out / "dataset_manifest.json").read_text())
    assert man["task"]["label_classes"] == {"no": 0, "yes": 1}
    assert man["task"]["cut"] == "at or before prediction_time"

    # the baselines read the same history: A01 counts, 0 days before the prediction day's end
    from exmed_bert.baselines.features import windowed_codes

    x = windowed_codes(task.data, len(vocab)).tocsr()
    a01 = vocab.id("icd10cm:A01")
    assert x[i, 3 * len(vocab) + a01] == 1 and x[i, 4 * len(vocab) + a01] == 1   # ever; 1 day before DAY + 1
    assert x[i, 3 * len(vocab) + vocab.id("icd10cm:B20")] == 0


def test_event_dates_without_a_time_leave_the_prediction_day_out(tmp_path):
    """A date column has no time of day: an event on the prediction day may be after the prediction time."""
    out, vocab = convert_with_labels(tmp_path, pa.date32())
    task = PatientDataset.load(out / "m_task_train.pt")
    assert codes(task, vocab, "1") == {"icd10cm:C50"}


def test_task_datasets_of_the_day_level_rule_are_rebuilt(tmp_path):
    """A conversion from before the prediction-time rule (its manifest's task entry has no "cut") is not
    reused by task_datasets_for: the task datasets are built again."""
    from exmed_bert.convert.task_datasets import task_datasets_for

    out, vocab = convert_with_labels(tmp_path)
    man_path = out / "dataset_manifest.json"
    man = json.loads(man_path.read_text())
    del man["task"]["cut"]
    man_path.write_text(json.dumps(man))
    before = (out / "m_task_train.pt").stat().st_mtime_ns
    paths = task_datasets_for(out, tmp_path / "labels" / "task.parquet")
    assert paths["train"].stat().st_mtime_ns != before
    assert codes(PatientDataset.load(paths["train"]), vocab, "1") == {"icd10cm:C50", "icd10cm:A01", "icd10cm:Z99"}


def test_task_datasets_of_the_exclusive_time_rule_are_rebuilt(tmp_path):
    """Task datasets cut by the older rule ("before prediction_time": the event at the time left out) are
    rebuilt under the inclusive one."""
    from exmed_bert.convert.task_datasets import task_datasets_for

    out, vocab = convert_with_labels(tmp_path)
    man_path = out / "dataset_manifest.json"
    man = json.loads(man_path.read_text())
    man["task"]["cut"] = "before prediction_time"
    man_path.write_text(json.dumps(man))
    before = (out / "m_task_train.pt").stat().st_mtime_ns
    paths = task_datasets_for(out, tmp_path / "labels" / "task.parquet")
    assert paths["train"].stat().st_mtime_ns != before
    task_man = json.loads((out / "m_task_manifest.json").read_text())
    assert task_man["task"]["cut"] == "at or before prediction_time"
    assert task_datasets_for(out, tmp_path / "labels" / "task.parquet")["train"].stat().st_mtime_ns == \
        paths["train"].stat().st_mtime_ns   # now reused


def test_json_events_have_dates_only_so_the_prediction_day_is_left_out(tmp_path):
    """JSON input with MEDS labels: no event has a time of day, so the cut is by the day."""
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"patient_id": "1", "birth_date": "1970-05-05", "diagnoses": [
        {"code": "C50", "date": "2020-03-04"}, {"code": "A01", "date": "2020-03-05", "time": 0}]}) + "\n")
    labels = labels_file(tmp_path / "labels" / "task.parquet", [1], [T("2020-03-05 12:00")],
                         boolean_value=pa.array([True]))
    out = tmp_path / "out"
    assert convert_main(["--input", str(src), "--output", str(out / "j.pt"), "--task-data", str(labels),
                         "--train-ratio", "0.999999"]) == 0
    vocab = Vocab.load(out / "vocab.json")
    task = PatientDataset.load(out / "j_task_train.pt")
    assert codes(task, vocab, "1") == {"icd10cm:C50"}   # a JSON "time" key is not read
    assert task.data["prediction_days"].tolist() == [DAY]
    assert json.loads((out / "dataset_manifest.json").read_text())["task"]["cut"] == "before the day of prediction_time"


def test_task_datasets_are_reused_after_the_meds_input_moved(tmp_path):
    from exmed_bert.convert.task_datasets import task_datasets_for

    out, _ = convert_with_labels(tmp_path)
    before = (out / "m_task_train.pt").stat().st_mtime_ns
    (tmp_path / "meds").rename(tmp_path / "moved")
    paths = task_datasets_for(out, tmp_path / "labels" / "task.parquet")
    assert paths["train"].stat().st_mtime_ns == before


def test_a_subject_with_two_prediction_times_has_two_task_rows(tmp_path):
    """Subject 1 labelled at 2020-03-04 10:00 (no) and 2020-03-05 12:00 (yes): two rows of the same split,
    each cut at its own time; `prediction_times` tells them apart."""
    (tmp_path / "meds" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"subject_id": pa.array([e[0] for e in EVENTS], pa.int64()),
                             "time": pa.array([T(e[1]) for e in EVENTS], pa.timestamp("us")),
                             "code": pa.array([e[2] for e in EVENTS])}), tmp_path / "meds" / "data" / "0.parquet")
    when = [T("2020-03-05 12:00"), T("2020-03-04 10:00"), T("2020-01-01")]
    labels = labels_file(tmp_path / "labels.parquet", [1, 1, 2], when, boolean_value=pa.array([True, False, False]))
    out = tmp_path / "out"
    for fast in (True, False):   # the columnar and the per-record paths
        from exmed_bert.convert.conversion import convert_patients

        convert_patients(tmp_path / "meds", out / str(fast) / "m.pt", task_data=labels, train_ratio=0.999999,
                         progress=False, fast=fast)
    vocab = Vocab.load(out / "True" / "vocab.json")
    task = PatientDataset.load(out / "True" / "m_task_train.pt")
    assert task.patient_ids == ["1", "1", "2"]
    us = [int((t - T("1970-01-01")).total_seconds()) * 1_000_000 for t in when]
    assert task.data["prediction_times"].tolist() == [us[1], us[0], us[2]]   # in time order
    assert task.data["labels"].tolist() == [0, 1, 0]
    assert task.data["prediction_days"].tolist() == [DAY, DAY + 1,
                                                     (dt.date(2020, 1, 1) - dt.date(1970, 1, 1)).days + 1]
    assert codes_at(task, vocab, 0) == {"icd10cm:C50"}                    # 2020-03-04 09:00, before 10:00
    assert codes_at(task, vocab, 1) == {"icd10cm:C50", "icd10cm:A01", "icd10cm:Z99"}   # Z99 at 12:00: at the time
    stays = [task.data["los_days"][a:b].tolist() for a, b in zip(task.data["los_offsets"][:-1].tolist(),
                                                                  task.data["los_offsets"][1:].tolist())]
    assert stays[:2] == [[2], [3]]   # the open stay as known on each prediction day
    man = json.loads((out / "True" / "dataset_manifest.json").read_text())
    assert man["task"]["splits"]["train"]["patients"] == 3
    assert man["task"]["label_rows"] == {"read": 3, "kept": 3, "kept_without_history": 0, "subject_not_in_data": 0,
                                         "subject_in_no_split": 0, "bad": 0, "bad_reasons": {}}
    # the label check of fine-tuning and the baselines tells a subject's rows apart by their time
    from exmed_bert.tasks import reconcile

    flipped = labels_file(tmp_path / "flipped.parquet", [1, 1, 2], when, boolean_value=pa.array([True, True, False]))
    with pytest.raises(UserError, match="patient '1' at prediction time 2020-03-04T10:00:00 has label 0"):
        reconcile(read_task_csv(flipped), {"train": task}, str(out))
    other = PatientDataset.load(out / "False" / "m_task_train.pt")
    assert other.patient_ids == task.patient_ids
    for k, v in task.data.items():
        assert (v == other.data[k]) if not hasattr(v, "equal") else v.equal(other.data[k]), k


def codes_at(ds, vocab, i):
    return {vocab.token(t) for t in ds[i]["input_ids"].tolist()} - set(vocab.tokens[:5])


def test_a_midnight_prediction_time_with_nothing_at_it_reads_the_history_on_its_own_date(tmp_path):
    """A label at midnight whose subject has no event at that instant has a history that ends the day before:
    its prediction day (what time and age count back from) is the date, as a task CSV's prediction date is.
    An event kept at exactly midnight (subject 2 above) moves the history into the date: the day after."""
    global EVENTS
    saved = EVENTS
    EVENTS = [e for e in saved if not (e[0] == 2 and e[1] == "2020-01-01 00:00")]   # nothing at the midnight
    try:
        out, vocab = convert_with_labels(tmp_path)
    finally:
        EVENTS = saved
    task = PatientDataset.load(out / "m_task_train.pt")
    assert codes(task, vocab, "2") == {"icd10cm:C50", "icd10cm:B20"}
    pred = dict(zip(task.patient_ids, task.data["prediction_days"].tolist()))
    assert pred == {"1": DAY + 1, "2": (dt.date(2020, 1, 1) - dt.date(1970, 1, 1)).days}
