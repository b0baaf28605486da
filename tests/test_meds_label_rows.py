"""MEDS as the standard reads it: static (null-time) codes, duplicate rows, every label row accounted for,
rows with no history kept as [CLS] only, integer subject ids, and the split source named on the summary."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.cli.convert import main as convert_main
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError


def T(s):
    return None if s is None else dt.datetime.fromisoformat(s)


def write_shard(path, rows, values=None):
    """rows: (subject_id, 'YYYY-MM-DD[ HH:MM]' or None, code)."""
    cols = {"subject_id": pa.array([r[0] for r in rows], pa.int64()),
            "time": pa.array([T(r[1]) for r in rows], pa.timestamp("us")),
            "code": pa.array([r[2] for r in rows], pa.string())}
    if values is not None:
        cols["numeric_value"] = pa.array(values, pa.float32())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)


def write_labels(path, ids, times, values, id_type=pa.int64()):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"subject_id": pa.array(ids, id_type),
                             "prediction_time": pa.array([T(t) for t in times], pa.timestamp("us")),
                             "boolean_value": pa.array(values, pa.bool_())}), path)
    return path


def convert(inp, out, *extra):
    return convert_main(["--input", str(inp), "--output", str(out), "--train-ratio", "0.999999", *extra])


def tokens(ds, vocab, i):
    return [vocab.token(t) for t in ds[i]["input_ids"].tolist()]


STATIC = [(1, "1970-01-01", "MEDS_BIRTH"), (1, None, "GENDER//F"), (1, None, "Race//4"),
          (1, "2020-01-05", "ICD10CM//E1165"), (1, "2020-02-01", "ICD10CM//I10"),
          (2, "1980-01-01", "MEDS_BIRTH"), (2, None, "EYE_COLOR//blue"), (2, "2020-03-01", "ICD10CM//C50")]


def test_static_codes_are_kept_as_first_visit_tokens_never_rejects(tmp_path, capsys):
    write_shard(tmp_path / "meds" / "data" / "0.parquet", STATIC)
    assert convert(tmp_path / "meds", tmp_path / "keep" / "m.pt", "--other-codes", "keep") == 0
    man = json.loads((tmp_path / "keep" / "dataset_manifest.json").read_text())
    assert man["rejected"] == 0, man["reject_reasons"]   # no "diagnoses entry 'Race//4' without a date"
    vocab = Vocab.load(tmp_path / "keep" / "vocab.json")
    ds = PatientDataset.load(tmp_path / "keep" / "m_train.pt")
    one = tokens(ds, vocab, ds.patient_ids.index("1"))
    # in the first visit (2020-01-05), before the second; sex is still read from GENDER
    assert one[:4] == ["[CLS]", "icd10cm:E11.65", "other:Race//4", "[SEP]"] or \
        one[:4] == ["[CLS]", "other:Race//4", "icd10cm:E11.65", "[SEP]"]
    assert one[4:] == ["icd10cm:I10", "[SEP]"]
    assert "other:EYE_COLOR//blue" in tokens(ds, vocab, ds.patient_ids.index("2"))
    sex = ds.data["sex"].tolist()
    assert sex[ds.patient_ids.index("1")] != sex[ds.patient_ids.index("2")]   # GENDER//F read; 2 has none
    assert man["meds_kept_codes"]["Race"] == 1 and man["meds_kept_codes"]["EYE_COLOR"] == 1

    assert convert(tmp_path / "meds", tmp_path / "drop" / "m.pt") == 0
    man = json.loads((tmp_path / "drop" / "dataset_manifest.json").read_text())
    assert man["rejected"] == 0 and man["meds_ignored_codes"]["Race"] == 1 and man["meds_ignored_codes"]["EYE_COLOR"] == 1


def test_a_null_time_diagnosis_is_a_static_fact_counted_when_dropped(tmp_path):
    rows = [(1, "1970-01-01", "MEDS_BIRTH"), (1, None, "ICD10CM//E1165"), (1, "2020-01-05", "ICD10CM//I10")]
    write_shard(tmp_path / "meds" / "data" / "0.parquet", rows)
    assert convert(tmp_path / "meds", tmp_path / "drop" / "m.pt") == 0
    man = json.loads((tmp_path / "drop" / "dataset_manifest.json").read_text())
    assert man["rejected"] == 0 and man["meds_ignored_codes"] == {"ICD10CM (static)": 1}
    assert convert(tmp_path / "meds", tmp_path / "keep" / "m.pt", "--other-codes", "keep") == 0
    vocab = Vocab.load(tmp_path / "keep" / "vocab.json")
    ds = PatientDataset.load(tmp_path / "keep" / "m_train.pt")
    assert sorted(tokens(ds, vocab, 0)) == sorted(["[CLS]", "icd10cm:E11.65", "icd10cm:I10", "[SEP]"])


def test_duplicate_rows_are_dropped_once_and_counted(tmp_path, capsys):
    rows = [(1, "1970-01-01", "MEDS_BIRTH"), (1, "2020-01-05 10:00", "ICD10CM//E1165"),
            (1, "2020-01-05 10:00", "ICD10CM//E1165"),           # a duplicate
            (1, "2020-01-05 11:00", "ICD10CM//E1165"),           # another time: not one
            (1, "2020-01-06", "LAB//x"), (1, "2020-01-06", "LAB//x"),   # values differ: not duplicates
            (1, "2020-01-07", "LAB//y"), (1, "2020-01-07", "LAB//y"),   # same (null) value: a duplicate
            (1, "2020-01-02", "HOSPITAL_ADMISSION//IP"), (1, "2020-01-02", "HOSPITAL_ADMISSION//IP"),
            (1, "2020-01-04", "HOSPITAL_DISCHARGE//HOME")]
    values = [None, None, None, None, 1.0, 2.0, None, None, None, None, None]
    write_shard(tmp_path / "meds" / "data" / "0.parquet", rows, values)
    for mode in ("drop", "keep"):
        capsys.readouterr()
        assert convert(tmp_path / "meds", tmp_path / mode / "m.pt", "--other-codes", mode) == 0
        man = json.loads((tmp_path / mode / "dataset_manifest.json").read_text())
        # drop reads no LAB row, so only the used rows are looked at for duplicates
        assert man["meds_duplicate_rows_dropped"] == {"drop": 2, "keep": 3}[mode]
        assert f"{man['meds_duplicate_rows_dropped']} duplicate rows dropped" in capsys.readouterr().out
        vocab = Vocab.load(tmp_path / mode / "vocab.json")
        ds = PatientDataset.load(tmp_path / mode / "m_train.pt")
        toks = tokens(ds, vocab, 0)
        assert toks.count("icd10cm:E11.65") == 2   # 10:00 once, 11:00 once (both on 2020-01-05)
        if mode == "keep":
            assert toks.count("other:LAB//x") == 2 and toks.count("other:LAB//y") == 1
        assert ds.data["los_days"].tolist() == [2]   # one stay: the repeated admission row was dropped


def labelled_root(tmp_path, splits=True):
    """Subjects 1-4 in the data; 1-3 in subject_splits.parquet (4 is in no split); labels for 1 (twice: one
    before any event), 2, 4, 9 (not in the data) and a null label."""
    rows = [(s, "1970-01-01", "MEDS_BIRTH") for s in (1, 2, 3, 4)] + [
        (1, "2020-01-05 10:00", "ICD10CM//E1165"), (2, "2020-01-05 10:00", "ICD10CM//I10"),
        (3, "2020-01-05 10:00", "ICD10CM//C50"), (4, "2020-01-05 10:00", "ICD10CM//C50")]
    rows.sort(key=lambda r: r[0])
    write_shard(tmp_path / "meds" / "data" / "train" / "0.parquet", rows)
    if splits:
        (tmp_path / "meds" / "metadata").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"subject_id": pa.array([1, 2, 3], pa.int64()),
                                 "split": ["train", "train", "train"]}),
                       tmp_path / "meds" / "metadata" / "subject_splits.parquet")
    return write_labels(tmp_path / "labels" / "0.parquet", [1, 1, 2, 4, 9, 3],
                        ["2020-01-05 10:00", "2019-12-31", "2020-02-01", "2020-02-01", "2020-02-01", "2020-02-01"],
                        [True, False, True, False, True, None])


def test_every_label_row_is_counted_once_and_rows_without_history_are_kept(tmp_path, capsys):
    labels = labelled_root(tmp_path)
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        capsys.readouterr()
        assert convert(tmp_path / "meds", out / "m.pt", "--task-data", str(labels), "--workers", workers) == 0
        line = capsys.readouterr().out
        r = json.loads((out / "dataset_manifest.json").read_text())["task"]["label_rows"]
        assert r == {"read": 6, "kept": 2, "kept_without_history": 1, "subject_not_in_data": 1,
                     "subject_in_no_split": 1, "bad": 1, "bad_reasons": {"missing label": 1}}
        assert r["read"] == r["kept"] + r["kept_without_history"] + r["subject_not_in_data"] + \
            r["subject_in_no_split"] + r["bad"]
        assert ("label rows: 6 read = 2 kept + 1 kept with no event before their time ([CLS] only) + 1 subject "
                "not in the data + 1 subject in no split + 1 bad, 1 missing label") in line
        assert (out / "task_rejected.csv").read_text().splitlines()[1:] == ["6,3,missing boolean_value"]
        task = PatientDataset.load(out / "m_task_train.pt")
        assert task.patient_ids == ["1", "1", "2"]
        vocab = Vocab.load(out / "vocab.json")
        # subject 1 at 2019-12-31: nothing before it, kept as [CLS] alone with its age that day
        assert tokens(task, vocab, 0) == ["[CLS]"] and task.data["labels"].tolist() == [0, 1, 1]
        assert task[0]["age_ids"].tolist() == [49]
        assert tokens(task, vocab, 1) == ["[CLS]", "icd10cm:E11.65", "[SEP]"]   # at the time: in
    from exmed_bert.convert.conversion import convert_patients

    with pytest.raises(UserError, match=r"row 6: missing boolean_value .*--on-task-error skip"):
        convert_patients(tmp_path / "meds", tmp_path / "f" / "m.pt", task_data=labels, on_task_error="fail",
                         progress=False)


def test_a_missing_split_file_falls_back_to_the_hash_and_says_so(tmp_path, capsys):
    labels = labelled_root(tmp_path, splits=False)
    assert convert(tmp_path / "meds", tmp_path / "out" / "m.pt", "--task-data", str(labels)) == 0
    line = capsys.readouterr().out
    assert "no metadata/subject_splits.parquet: splits by the seeded subject-id hash" in line
    assert json.loads((tmp_path / "out" / "dataset_manifest.json").read_text())["split_source"] == "hash"


def test_string_subject_ids_in_meds_labels_are_refused_with_what_to_do(tmp_path):
    labels = write_labels(tmp_path / "l.parquet", ["a1"], ["2020-01-01"], [True], id_type=pa.string())
    write_shard(tmp_path / "meds" / "data" / "0.parquet", [(1, "2020-01-01", "ICD10CM//I10")])
    with pytest.raises(UserError, match="subject_id is string; MEDS subject ids are int64"):
        from exmed_bert.convert.conversion import convert_patients
        convert_patients(tmp_path / "meds", tmp_path / "o" / "m.pt", task_data=labels, progress=False)
