"""MEDS as the field writes it: code forms (this project's, MIMIC-IV-MEDS, OMOP), dataset roots with
metadata/, time column types and timezones. Fixtures are tiny Parquet files written with pyarrow."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.cli.convert import main as convert_main
from exmed_bert.convert.conversion import convert_patients
from exmed_bert.convert.meds import MedsReader
from exmed_bert.convert.meds_codes import MedsCode, parse_meds_code
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError

# The MEDS data schema (meds.DataSchema, meds 0.4): the package is not a dependency, so it is restated.
DATA_SCHEMA = pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()),
                         ("numeric_value", pa.float32()), ("text_value", pa.large_string())])


def ts(s):
    return None if s is None else dt.datetime.fromisoformat(s)


def write_shard(path, rows, time_type=pa.timestamp("us"), times=None):
    """rows: (subject_id, ISO time or None, code); `times` overrides the time column's values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = DATA_SCHEMA.set(1, pa.field("time", time_type))
    values = times if times is not None else [ts(r[1]) for r in rows]
    pq.write_table(pa.table({"subject_id": [r[0] for r in rows], "time": pa.array(values, time_type),
                             "code": [r[2] for r in rows], "numeric_value": [None] * len(rows),
                             "text_value": [None] * len(rows)}, schema=schema), path)


def write_metadata(root, splits=None, info=None):
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    # codes.parquet has other columns than events: reading it as data is what used to fail
    pq.write_table(pa.table({"code": ["DIAGNOSIS//ICD//10//E1165"], "description": ["Type 2 diabetes"],
                             "parent_codes": pa.array([["ICD10CM/E11.65"]], pa.list_(pa.string()))}),
                   meta / "codes.parquet")
    if splits is not None:
        pq.write_table(pa.table({"subject_id": pa.array(list(splits), pa.int64()),
                                 "split": pa.array(list(splits.values()), pa.string())}),
                       meta / "subject_splits.parquet")
    if info is not None:
        (meta / "dataset.json").write_text(json.dumps(info))


# ---------------------------------------------------------------- code forms, in isolation

@pytest.mark.parametrize("code, expected", [
    # this project's dialect
    ("ICD10CM//E1165", ("diagnoses", "icd10cm", "E11.65", "ICD10CM")),
    ("icd9cm//25000", ("diagnoses", "icd9cm", "250.00", "ICD9CM")),
    ("ATC//N02BE01", ("prescriptions", "atc", "N02BE01", "ATC")),
    ("CPT//99213", ("procedures", "cpt", "99213", "CPT")),
    ("PHECODE//250.2", ("diagnoses", "phecode", "250.2", "PHECODE")),
    ("ICD10PCS//0QS734Z", ("procedures", "icd10pcs", "0QS734Z", "ICD10PCS")),
    # MIMIC-IV-MEDS: no dots, ICD version in the code
    ("DIAGNOSIS//ICD//10//E1165", ("diagnoses", "icd10cm", "E11.65", "DIAGNOSIS//ICD//10")),
    ("DIAGNOSIS//ICD//9//4019", ("diagnoses", "icd9cm", "401.9", "DIAGNOSIS//ICD//9")),
    ("DIAGNOSIS//ICD//9//E8490", ("diagnoses", "icd9cm", "E849.0", "DIAGNOSIS//ICD//9")),
    ("DIAGNOSIS//ICD//9//V4581", ("diagnoses", "icd9cm", "V45.81", "DIAGNOSIS//ICD//9")),
    ("PROCEDURE//ICD//10//0QS734Z", ("procedures", "icd10pcs", "0QS734Z", "PROCEDURE//ICD//10")),
    ("PROCEDURE//ICD//9//3961", ("procedures", "icd9proc", "39.61", "PROCEDURE//ICD//9")),
    # OMOP (meds_etl): vocabulary_id/concept_code, any case
    ("ICD10CM/E11.65", ("diagnoses", "icd10cm", "E11.65", "ICD10CM")),
    ("icd10cm/E1165", ("diagnoses", "icd10cm", "E11.65", "ICD10CM")),
    ("ICD9CM/250.00", ("diagnoses", "icd9cm", "250.00", "ICD9CM")),
    ("ICD10PCS/0QS734Z", ("procedures", "icd10pcs", "0QS734Z", "ICD10PCS")),
    ("ICD9Proc/39.61", ("procedures", "icd9proc", "39.61", "ICD9PROC")),
    ("RxNorm/860975", ("prescriptions", "rxnorm", "860975", "RXNORM")),
    ("ATC/A10BA02", ("prescriptions", "atc", "A10BA02", "ATC")),
    ("CPT4/99213", ("procedures", "cpt", "99213", "CPT4")),
])
def test_event_codes_of_every_dialect(code, expected):
    m = parse_meds_code(code)
    assert (m.kind, m.system, m.code, m.family) == expected


@pytest.mark.parametrize("code, family", [
    ("SNOMED/44054006", "SNOMED"), ("LOINC/2345-7", "LOINC"), ("HCPCS/J1234", "HCPCS"),
    ("Snomed/44054006", "SNOMED"),
    ("MEDICATION//Metformin//PO", "MEDICATION"), ("MEDICATION//START//Metformin", "MEDICATION"),
    ("LAB//RESULT//50813//mmol/L", "LAB"), ("HCPCS//Cardiac catheterization", "HCPCS"),
    ("DRG//HCFA//123//UNK", "DRG"), ("HR", "HR"), ("MEDS_DEATH", "MEDS_DEATH"),
    ("DIAGNOSIS//ICD//11//5A11", "DIAGNOSIS//ICD//11"), ("Visit/OP", "Visit"),
    ("EYE_COLOR//BROWN", "EYE_COLOR"),
    # a malformed code of a recognised vocabulary is counted, not a reason to reject the patient
    ("ICD10CM//E1", "ICD10CM (malformed)"), ("DIAGNOSIS//ICD//10//123", "DIAGNOSIS//ICD//10 (malformed)"),
    ("PROCEDURE//ICD//10//0QS73", "PROCEDURE//ICD//10 (malformed)"), ("RxNorm/abc", "RXNORM (malformed)"),
    ("ICD10CM//", "ICD10CM (malformed)"), ("ICD10CM/" + "E" * 40, "ICD10CM (malformed)"),
])
def test_other_and_malformed_codes_are_ignored_by_family(code, family):
    assert parse_meds_code(code) == MedsCode("ignored", None, None, family)


@pytest.mark.parametrize("code, kind, value", [
    ("MEDS_BIRTH", "birth", None), ("GENDER//F", "sex", "F"), ("GENDER//m", "sex", "M"),
    ("Gender/F", "sex", "F"), ("GENDER//U", "sex", None),
    ("HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM", "admission", None),
    ("HOSPITAL_DISCHARGE//HOME", "discharge", None),
])
def test_patient_facts(code, kind, value):
    m = parse_meds_code(code)
    assert (m.kind, m.code) == (kind, value)


# ---------------------------------------------------------------- dataset layout and metadata

MIMIC_ROWS = [  # subject_id, time, code
    (10, "1960-01-01", "MEDS_BIRTH"), (10, None, "GENDER//F"),
    (10, "2015-03-01 08:00:00", "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM"),
    (10, "2015-03-01 09:00:00", "LAB//RESULT//50931//mg/dL"),
    (10, "2015-03-01 10:00:00", "MEDICATION//START//Metformin"),
    (10, "2015-03-05 12:00:00", "DIAGNOSIS//ICD//9//4019"),
    (10, "2015-03-05 12:00:00", "DIAGNOSIS//ICD//9//E8490"),
    (10, "2015-03-05 12:00:00", "PROCEDURE//ICD//9//3961"),
    (10, "2015-03-05 12:00:00", "HOSPITAL_DISCHARGE//HOME"),
    (11, "1970-06-15", "MEDS_BIRTH"), (11, None, "GENDER//M"),
    (11, "2020-07-01 10:00:00", "DIAGNOSIS//ICD//10//E1165"),
    (11, "2020-07-01 10:00:00", "DIAGNOSIS//ICD//10//I10"),
    (11, "2020-07-01 10:00:00", "PROCEDURE//ICD//10//0QS734Z"),
    (11, "2020-07-01 11:00:00", "HCPCS//Office visit"),
    (11, "2020-07-02 10:00:00", "DIAGNOSIS//ICD//10//E11"),
]
MIMIC_INFO = {"dataset_name": "MIMIC-IV", "dataset_version": "3.1", "etl_name": "MIMIC_IV_MEDS",
              "meds_version": "0.4.1"}


def mimic_root(tmp_path):
    root = tmp_path / "mimic"
    write_shard(root / "data" / "train" / "0.parquet", MIMIC_ROWS[:9])
    write_shard(root / "data" / "held_out" / "0.parquet", MIMIC_ROWS[9:])
    write_metadata(root, splits={10: "train", 11: "held_out"}, info=MIMIC_INFO)
    return root


def test_root_data_folder_and_single_file_are_all_accepted(tmp_path):
    root = mimic_root(tmp_path)
    shards = [root / "data" / "held_out" / "0.parquet", root / "data" / "train" / "0.parquet"]
    for where in (root, root / "data"):
        reader = MedsReader(where)
        assert reader.files == shards  # never metadata/codes.parquet
        assert reader.root == root and reader.dataset_info == MIMIC_INFO
        assert reader.subject_splits == {"10": "train", "11": "held_out"}
        assert [p["patient_id"] for p in reader] == [11, 10]
    one = MedsReader(shards[1])
    assert one.files == [shards[1]] and one.dataset_info is None and one.subject_splits is None
    assert [p["patient_id"] for p in one] == [10]


def test_mimic_codes_become_events_and_the_rest_is_counted(tmp_path):
    reader = MedsReader(mimic_root(tmp_path))
    pats = {p["patient_id"]: p for p in reader}
    p10, p11 = pats[10], pats[11]
    assert p10["birth_date"] == "1960-01-01" and p10["sex"] == "F"
    assert p10["hospitalizations"] == [{"admission_date": "2015-03-01", "discharge_date": "2015-03-05"}]
    assert {"code": "4019", "date": "2015-03-05", "system": "icd9cm"} in p10["diagnoses"]
    assert [e["code"] for e in p11["diagnoses"]] == ["E1165", "I10", "E11"]
    procedures = [(e["system"], e["code"]) for e in p10["procedures"] + p11["procedures"]]
    assert procedures == [("icd9proc", "3961"), ("icd10pcs", "0QS734Z")]
    assert reader.ignored["LAB"] == 1 and reader.ignored["MEDICATION"] == 1 and reader.ignored["HCPCS"] == 1


def test_subject_splits_reading(tmp_path):
    root = tmp_path / "meds"
    write_shard(root / "data" / "0.parquet", [(1, "2020-01-01", "ICD10CM//I10")])
    assert MedsReader(root).subject_splits is None  # no metadata/ at all
    write_metadata(root, splits={1: "train", 2: "tuning", 3: "held_out", 4: "my_fold"})
    assert MedsReader(root).subject_splits == {"1": "train", "2": "tuning", "3": "held_out", "4": "my_fold"}
    pq.write_table(pa.table({"subject_id": [1, 1], "split": ["train", "held_out"]}),
                   root / "metadata" / "subject_splits.parquet")
    with pytest.raises(UserError, match="subject 1 is in two splits"):
        MedsReader(root).subject_splits
    pq.write_table(pa.table({"subject_id": [1], "fold": ["train"]}), root / "metadata" / "subject_splits.parquet")
    with pytest.raises(UserError, match="subject_splits.parquet: not a MEDS subject split file"):
        MedsReader(root).subject_splits


def test_bad_dataset_json_and_bad_inputs_are_one_line_errors(tmp_path):
    root = tmp_path / "meds"
    write_shard(root / "data" / "0.parquet", [(1, "2020-01-01", "ICD10CM//I10")])
    write_metadata(root)
    (root / "metadata" / "dataset.json").write_text("{not json")
    with pytest.raises(UserError, match="dataset.json: not readable as JSON"):
        MedsReader(root)
    with pytest.raises(UserError, match="input not found"):
        MedsReader(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(UserError, match="not a .parquet file"):
        MedsReader(tmp_path / "x.csv")
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(UserError, match=r"empty.data: no .parquet files found"):
        MedsReader(tmp_path / "empty")


def test_omop_style_dataset(tmp_path):
    root = tmp_path / "omop"
    write_shard(root / "data" / "0.parquet", [
        (7, "1955-02-02", "MEDS_BIRTH"), (7, "1955-02-02", "Gender/M"),
        (7, "2019-05-01 23:59:59", "ICD10CM/E11.65"), (7, "2019-05-01 23:59:59", "RxNorm/860975"),
        (7, "2019-05-01 23:59:59", "SNOMED/44054006"), (7, "2019-05-01 23:59:59", "LOINC/4548-4"),
        (7, "2019-05-01 23:59:59", "CPT4/99213"), (7, "2019-05-01 23:59:59", "HCPCS/J1234"),
        (7, "2019-05-02 23:59:59", "Visit/IP"), (7, "2019-05-02 23:59:59", "ICD10CM/E1"),
    ])
    reader = MedsReader(root)
    (p,) = list(reader)
    assert p["sex"] == "M" and p["birth_date"] == "1955-02-02"
    assert [(e["system"], e["code"]) for e in p["diagnoses"]] == [("icd10cm", "E11.65")]
    assert [(e["system"], e["code"]) for e in p["prescriptions"]] == [("rxnorm", "860975")]
    assert [(e["system"], e["code"]) for e in p["procedures"]] == [("cpt", "99213")]
    assert reader.ignored == {"SNOMED": 1, "LOINC": 1, "HCPCS": 1, "Visit (no end)": 1, "ICD10CM (malformed)": 1}


def test_meds_testing_helpers_like_sample(tmp_path):
    """The layout of meds_testing_helpers' static sample: shards per split, static rows without a
    time, measurement codes only. Every subject is read; nothing in it is a code this model uses."""
    root = tmp_path / "sample"
    write_shard(root / "data" / "train" / "0.parquet", [
        (239684, None, "EYE_COLOR//BROWN"), (239684, None, "HEIGHT"), (239684, "1980-12-28", "MEDS_BIRTH"),
        (239684, "2010-05-11 17:41:51", "ADMISSION//CARDIAC"), (239684, "2010-05-11 17:41:51", "HR"),
        (239684, "2010-05-11 17:41:51", "TEMP"), (239684, "2010-05-11 19:27:19", "DISCHARGE"),
        (1195293, None, "EYE_COLOR//BLUE"), (1195293, "1978-06-20", "MEDS_BIRTH"),
        (1195293, "2010-06-20 19:23:52", "HR"),
    ])
    write_shard(root / "data" / "tuning" / "0.parquet", [(754281, "1988-12-19", "MEDS_BIRTH"),
                                                          (754281, "2010-01-03 06:27:59", "HR")])
    write_shard(root / "data" / "held_out" / "0.parquet", [(1500733, "1986-07-20", "MEDS_BIRTH")])
    write_metadata(root, splits={239684: "train", 1195293: "train", 754281: "tuning", 1500733: "held_out"})
    reader = MedsReader(root)
    pats = {p["patient_id"]: p for p in reader}
    assert sorted(pats) == [239684, 754281, 1195293, 1500733]
    assert pats[239684]["birth_date"] == "1980-12-28" and pats[239684]["diagnoses"] == []
    assert reader.ignored == {"EYE_COLOR": 2, "HEIGHT": 1, "ADMISSION": 1, "HR": 3, "TEMP": 1, "DISCHARGE": 1}
    assert reader.subject_splits["754281"] == "tuning"
    with pytest.raises(UserError, match="all 4 records were rejected .*no diagnoses, prescriptions or procedures"):
        convert_patients(root, tmp_path / "out" / "s.pt", progress=False)


# ---------------------------------------------------------------- the time column

@pytest.mark.parametrize("time_type, times, found", [
    (pa.int64(), [1_600_000_000_000_000], "int64"),
    (pa.float64(), [1.6e9], "double"),
    (pa.string(), ["03/01/2021 10:00"], "string"),
])
def test_time_of_the_wrong_type_is_a_file_level_error(tmp_path, capsys, time_type, times, found):
    path = tmp_path / "meds" / "data" / "0.parquet"
    write_shard(path, [(1, None, "ICD10CM//E1165")], time_type=time_type, times=times)
    out = tmp_path / "out" / "m.pt"
    assert convert_main(["--input", str(tmp_path / "meds"), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err and f"column 'time' is {found}" in err and "requires a timestamp" in err


def test_timezone_aware_times_give_utc_dates(tmp_path):
    new_york = pa.timestamp("us", tz="America/New_York")
    rows = [(1, None, "ICD10CM//E1165"), (1, None, "ICD10CM//I10")]
    times = [dt.datetime(2021, 3, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),  # 04:30 UTC
             dt.datetime(2021, 3, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))]
    write_shard(tmp_path / "tz" / "0.parquet", rows, time_type=new_york, times=times)
    (p,) = list(MedsReader(tmp_path / "tz"))
    assert [(e["code"], e["date"]) for e in p["diagnoses"]] == [("I10", "2021-03-01"), ("E1165", "2021-03-02")]


def test_date_columns_and_times_before_1970(tmp_path):
    write_shard(tmp_path / "d" / "0.parquet", [(1, None, "ICD10CM//I10")], time_type=pa.date32(),
                times=[dt.date(2020, 2, 29)])
    write_shard(tmp_path / "d" / "1.parquet", [(2, "1950-05-01 23:00:00", "ICD10CM//I10")])
    pats = {p["patient_id"]: p for p in MedsReader(tmp_path / "d")}
    assert pats[1]["diagnoses"][0]["date"] == "2020-02-29"
    assert pats[2]["diagnoses"][0]["date"] == "1950-05-01"  # floored, not rounded towards 1970


# ---------------------------------------------------------------- end to end

def test_mimic_root_converts_end_to_end(tmp_path):
    root = mimic_root(tmp_path)
    out = tmp_path / "out" / "m.pt"
    man = convert_patients(root, out, train_ratio=0.999999, progress=False, split_source="hash")
    assert man["records"] == 2 and man["rejected"] == 0 and man["split_source"] == "hash"
    assert man["meds_dataset"]["dataset_name"] == "MIMIC-IV"
    vocab = Vocab.load(tmp_path / "out" / "vocab.json")
    for token in ("icd10cm:E11.65", "icd10cm:I10", "icd10cm:E11", "icd9cm:401.9", "icd9cm:E849.0"):
        assert token in vocab
    assert not any(":" in t and t.split(":", 1)[1] in ("E1165", "4019", "E8490") for t in vocab.tokens)
    ignored = man["meds_ignored_codes"]
    assert ignored["LAB"] == 1 and ignored["MEDICATION"] == 1 and ignored["HCPCS"] == 1
    assert "DIAGNOSIS" not in ignored and "PROCEDURE" not in ignored and "description" not in json.dumps(ignored)


def test_mimic_procedures_become_procedure_tokens(tmp_path):
    convert_patients(mimic_root(tmp_path), tmp_path / "out" / "m.pt", train_ratio=0.999999, progress=False,
                     split_source="hash")
    vocab = Vocab.load(tmp_path / "out" / "vocab.json")
    assert "icd10pcs:0QS734Z" in vocab and "icd9proc:39.61" in vocab
    types = vocab.token_types()
    assert types[vocab.id("icd10pcs:0QS734Z")] == 3 and types[vocab.id("icd9proc:39.61")] == 3


# ---------------------------------------------------------------- the dataset's own splits

def split_root(tmp_path, n=40):
    """n subjects with one diagnosis each; subject_splits: train, tuning, held_out and an extra fold."""
    names = ["train", "tuning", "held_out", "my_fold"]
    splits = {i: names[i % 4] for i in range(n)}
    rows = [(i, "2020-01-01T00:00:00", "MEDS_BIRTH") for i in range(n)]
    rows += [(i, "2021-05-01T10:00:00", f"DIAGNOSIS//ICD//10//E11{i % 10}") for i in range(n)]
    root = tmp_path / "split_ds"
    write_shard(root / "data" / "0.parquet", sorted(rows))
    write_metadata(root, splits=splits, info={"dataset_name": "toy", "dataset_version": "1"})
    return root, splits


def test_meds_subject_splits_are_the_splits_of_record(tmp_path):
    from exmed_bert.data.dataset import PatientDataset

    root, splits = split_root(tmp_path)
    out = tmp_path / "out" / "m.pt"
    # train_ratio 0.999999 would put every patient into train by hash: the MEDS splits must win
    man = convert_patients(root, out, train_ratio=0.999999, progress=False)
    assert man["split_source"] == "meds" and man["patients_outside_the_meds_splits"] == 10
    assert man["meds_subject_splits"] == {"held_out": 10, "my_fold": 10, "train": 10, "tuning": 10}
    want = {"train": "train", "val": "tuning", "test": "held_out"}
    for ours, theirs in want.items():
        ids = set(PatientDataset.load(out.parent / f"m_{ours}.pt").data["patient_ids"])
        assert ids == {str(i) for i, s in splits.items() if s == theirs}, ours
    train_ids = set(PatientDataset.load(out.parent / "m_train.pt").data["patient_ids"])
    assert not train_ids & {str(i) for i, s in splits.items() if s != "train"}  # no held_out ever in train


def test_split_source_hash_and_meds_without_a_split_file(tmp_path, capsys):
    from exmed_bert.cli.convert import main

    root, _ = split_root(tmp_path)
    man = convert_patients(root, tmp_path / "h" / "m.pt", progress=False, split_source="hash")
    assert man["split_source"] == "hash" and "meds_subject_splits" not in man
    assert sum(s["patients"] for s in man["splits"].values()) == 40
    (root / "metadata" / "subject_splits.parquet").unlink()
    assert main(["--input", str(root), "--output", str(tmp_path / "x" / "m.pt"), "--split-source", "meds"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "subject_splits.parquet" in err[0] and "--split-source hash" in err[0]
    assert not (tmp_path / "x" / "m_train.pt").exists()


def test_single_parquet_file_converts(tmp_path):
    root, _ = split_root(tmp_path)
    man = convert_patients(root / "data" / "0.parquet", tmp_path / "one" / "m.pt", progress=False)
    assert man["records"] == 40 and man["split_source"] == "hash"   # one file: no metadata/ is read
