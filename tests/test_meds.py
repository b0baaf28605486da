"""MEDS input: a folder of Parquet files converts to the same dataset as the equivalent JSON."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.cli.convert import main as convert_main
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.convert.meds import MedsReader
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError


def ts(s):
    return None if s is None else dt.datetime.fromisoformat(s)


ROWS = [  # subject_id, time, code
    (1, "1980-01-15", "MEDS_BIRTH"), (1, None, "GENDER//M"),
    (1, "2020-01-01", "ICD10CM//E1165"), (1, "2020-01-01", "ATC//N02BE01"), (1, "2020-01-01", "CPT//99213"),
    (1, "2020-02-01", "HOSPITAL_ADMISSION//IP"), (1, "2020-02-01", "ICD9CM//250.00"),
    (1, "2020-02-11", "HOSPITAL_DISCHARGE//HOME"), (1, "2020-02-11", "LAB//glucose"),
    (2, "1990-03-03", "MEDS_BIRTH"), (2, None, "GENDER//F"),
    (2, "2021-05-05", "RXNORM//197361"), (2, "2021-05-05", "ICD10CM//I10"),
]


def write_meds(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate((rows[:9], rows[9:])):
        table = pa.table({"subject_id": pa.array([r[0] for r in part], pa.int64()),
                          "time": pa.array([ts(r[1]) for r in part], pa.timestamp("us")),
                          "code": pa.array([r[2] for r in part], pa.string()),
                          "numeric_value": pa.array([None] * len(part), pa.float32())})
        pq.write_table(table, folder / f"shard_{k}.parquet")  # subject 1 in shard 0, subject 2 in shard 1


def test_meds_reader_builds_patients(tmp_path):
    write_meds(tmp_path / "meds" / "data", ROWS)
    reader = MedsReader(tmp_path / "meds")
    pats = {p["patient_id"]: p for p in reader}
    p1 = pats[1]
    assert p1["birth_date"] == "1980-01-15" and p1["sex"] == "M"
    assert {"code": "E1165", "date": "2020-01-01", "system": "icd10cm"} in p1["diagnoses"]
    assert p1["hospitalizations"] == [{"admission_date": "2020-02-01", "discharge_date": "2020-02-11"}]
    assert pats[2]["prescriptions"] == [{"code": "197361", "date": "2021-05-05", "system": "rxnorm"}]
    assert reader.ignored == {"LAB": 1}


def test_meds_folder_converts_like_json(tmp_path, capsys):
    write_meds(tmp_path / "meds", ROWS)
    out = tmp_path / "out" / "m.pt"
    assert convert_main(["--input", str(tmp_path / "meds"), "--output", str(out), "--train-ratio", "0.999999"]) == 0
    ds = PatientDataset.load(tmp_path / "out" / "m_train.pt")
    vocab = Vocab.load(tmp_path / "out" / "vocab.json")
    row = ds.patient_ids.index("1")
    assert [vocab.token(t) for t in ds[row]["input_ids"].tolist()] == [
        "[CLS]", "icd10cm:E11.65", "atc:N02BE01", "cpt:99213", "[SEP]", "icd9cm:250.00", "[SEP]"]
    assert ds[row]["sex"] == 2 and ds[row]["plos_los"] == 10 and ds[row]["age_ids"][1].item() == 39
    assert "rxnorm:197361" in vocab
    man = json.loads((tmp_path / "out" / "dataset_manifest.json").read_text())
    assert man["meds_ignored_codes"] == {"LAB": 1}


def test_empty_or_wrong_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no .parquet files"):
        MedsReader(tmp_path)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(UserError, match="not a MEDS Parquet file"):
        list(MedsReader(tmp_path))
