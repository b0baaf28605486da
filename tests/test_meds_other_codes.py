"""Issue 18: what a conversion says it kept and ignored, implausible stays, OMOP visits as stays, and an
all-rejected input still writing its manifest and rejects."""

import datetime as dt
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.cli.convert import main as convert_main
from exmed_bert.convert.meds import MedsReader
from exmed_bert.convert.meds_codes import parse_meds_code
from exmed_bert.convert.validate import STAY_CAP_DAYS
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.errors import UserError


def write_shard(path, rows, end=None):
    """rows: (subject_id, 'YYYY-MM-DD' or None, code); end: optional parallel list of end dates."""
    ts = [None if r[1] is None else dt.datetime.fromisoformat(r[1]) for r in rows]
    cols = {"subject_id": pa.array([r[0] for r in rows], pa.int64()), "time": pa.array(ts, pa.timestamp("us")),
            "code": pa.array([r[2] for r in rows], pa.string())}
    if end is not None:
        cols["end"] = pa.array([None if e is None else dt.datetime.fromisoformat(e) for e in end],
                               pa.timestamp("us"))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)


def patient_rows(sid, stay=None):
    rows = [(sid, "1970-01-01", "MEDS_BIRTH"), (sid, "2020-01-01", "ICD10CM//E1165"),
            (sid, "2020-01-01", "ATC//N02BE01"), (sid, "2020-01-02", "LAB//glucose"),
            (sid, "2020-01-02", "LAB//glucose"), (sid, "2020-01-03", "SNOMED//123")]
    if stay is not None:
        rows += [(sid, stay[0], "HOSPITAL_ADMISSION//IP"), (sid, stay[1], "HOSPITAL_DISCHARGE//HOME")]
    return rows


def convert(inp, out, *extra):
    return convert_main(["--input", str(inp), "--output", str(out), "--train-ratio", "0.999999", *extra])


def test_summary_and_manifest_count_kept_and_ignored_families(tmp_path, capsys):
    rows = [r for sid in range(1, 6) for r in patient_rows(sid)]
    write_shard(tmp_path / "meds" / "data" / "0.parquet", rows)
    assert convert(tmp_path / "meds", tmp_path / "out" / "m.pt") == 0
    line = capsys.readouterr().out
    assert "MEDS rows kept ATC 5, ICD10CM 5, MEDS_BIRTH 5, ignored LAB 10, SNOMED 5;" in line
    man = json.loads((tmp_path / "out" / "dataset_manifest.json").read_text())
    assert man["meds_kept_codes"] == {"ICD10CM": 5, "ATC": 5, "MEDS_BIRTH": 5}
    assert man["meds_ignored_codes"] == {"LAB": 10, "SNOMED": 5}
    assert man["implausible_stays"] == {"cap_days": STAY_CAP_DAYS, "left_out": 0}


def test_all_rejected_still_writes_manifest_and_rejects_and_names_families(tmp_path, capsys):
    rows = [(sid, "2020-01-02", "LAB//glucose") for sid in (1, 2, 3)] * 3 + [(1, "2020-01-03", "SNOMED//9")]
    write_shard(tmp_path / "meds" / "data" / "0.parquet", rows)
    assert convert(tmp_path / "meds", tmp_path / "out" / "m.pt") != 0
    err = capsys.readouterr().err
    assert re.search(r"all 3 records were rejected .*largest ignored code families were LAB 9, SNOMED 1.*"
                     r"m_rejected\.jsonl", err), err
    assert "Traceback" not in err
    rejects = (tmp_path / "out" / "m_rejected.jsonl").read_text().splitlines()
    assert len(rejects) == 3 and all("no diagnoses" in json.loads(r)["reason"] for r in rejects)
    man = json.loads((tmp_path / "out" / "dataset_manifest.json").read_text())
    assert man["all_rejected"] is True and man["records"] == 3 and man["rejected"] == 3
    assert man["meds_ignored_codes"] == {"LAB": 9, "SNOMED": 1} and man["splits"] == {}
    assert not (tmp_path / "out" / "m_train.pt").exists()


def test_all_rejected_json_writes_manifest_and_rejects(tmp_path, capsys):
    inp = tmp_path / "p.jsonl"
    inp.write_text("\n".join(json.dumps({"patient_id": i, "diagnoses": []}) for i in range(4)) + "\n")
    assert convert(inp, tmp_path / "out" / "j.pt") != 0
    assert "all 4 records were rejected" in capsys.readouterr().err
    assert len((tmp_path / "out" / "j_rejected.jsonl").read_text().splitlines()) == 4
    assert json.loads((tmp_path / "out" / "dataset_manifest.json").read_text())["all_rejected"] is True


def test_all_rejected_over_a_conversion_leaves_it_as_it_was_and_reports_beside_it(tmp_path, capsys):
    """A run whose every record is rejected must not leave a folder whose manifest and rejects describe
    datasets they did not produce: the conversion already there stays whole, the report goes beside it."""
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps({"patient_id": f"p{i}", "birth_date": "1960-01-01", "sex": "F",
                                          "diagnoses": [{"code": "E11.65", "date": "2020-01-02"}]})
                              for i in range(20)) + "\n" + json.dumps({"patient_id": None}) + "\n")
    out = tmp_path / "out"
    assert convert(good, out / "j.pt") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "j_rejected.jsonl" in before and "dataset_manifest.json" in before
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({"patient_id": i, "diagnoses": []}) for i in range(4)) + "\n")
    capsys.readouterr()
    assert convert(bad, out / "j.pt") == 2
    err = capsys.readouterr().err
    assert "all 4 records were rejected" in err and "j_rejected.failed.jsonl" in err and "left as it was" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if ".failed." not in p.name} == before
    assert len((out / "j_rejected.failed.jsonl").read_text().splitlines()) == 4
    report = json.loads((out / "dataset_manifest.failed.json").read_text())
    assert report["all_rejected"] is True and report["rejected_file"] == "j_rejected.failed.jsonl"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]        # no staged file left
    # a folder holding only an earlier failure's report is not a conversion: the usual names are reused
    fresh = tmp_path / "fresh"
    assert convert(bad, fresh / "j.pt") == 2 and convert(bad, fresh / "j.pt") == 2
    assert sorted(p.name for p in fresh.iterdir()) == ["dataset_manifest.json", "j_rejected.jsonl"]


@pytest.mark.parametrize("fast", ["jsonl", "json"])
def test_implausible_stays_are_left_out_and_counted(tmp_path, capsys, fast):
    """A Synthea-like 24,206-day stay is dropped (no PLOS label from it); the patient and the short stay
    stay. JSONL takes the columnar path, a JSON object the per-record one: both agree."""
    pats = [{"patient_id": "a", "diagnoses": [{"code": "E11.65", "date": "2000-01-01"}],
             "hospitalizations": [{"admission_date": "1950-01-01", "discharge_date": "2016-04-09"},
                                  {"admission_date": "2000-01-01", "discharge_date": "2000-01-11"}]},
            {"patient_id": "b", "diagnoses": [{"code": "I10", "date": "2000-01-01"}],
             "hospitalizations": [{"admission_date": "2000-01-01", "discharge_date": "2001-01-01"}]}]
    if fast == "jsonl":
        inp = tmp_path / "p.jsonl"
        inp.write_text("\n".join(json.dumps(p) for p in pats) + "\n")
    else:
        inp = tmp_path / "p.json"
        inp.write_text(json.dumps({"patients": pats}))
    assert convert(inp, tmp_path / "out" / "s.pt") == 0
    assert "2 hospital stays over 365 days left out" in capsys.readouterr().out
    man = json.loads((tmp_path / "out" / "dataset_manifest.json").read_text())
    assert man["implausible_stays"] == {"cap_days": 365, "left_out": 2} and man["rejected"] == 0
    ds = PatientDataset.load(tmp_path / "out" / "s_train.pt")
    assert ds.stays(ds.patient_ids.index("a")).tolist() == [10]
    assert ds.stays(ds.patient_ids.index("b")).tolist() == []


def test_stay_at_the_cap_is_kept(tmp_path):
    pats = [{"patient_id": "a", "diagnoses": [{"code": "E11.65", "date": "2000-01-01"}],
             "hospitalizations": [{"admission_date": "2000-01-01", "discharge_date": "2000-12-31"}]}]
    (tmp_path / "p.json").write_text(json.dumps(pats))
    assert convert(tmp_path / "p.json", tmp_path / "out" / "s.pt") == 0
    assert PatientDataset.load(tmp_path / "out" / "s_train.pt").stays(0).tolist() == [365]


def test_meds_etl_omop_visits_become_stays(tmp_path):
    """meds_etl writes an OMOP visit as `Visit/<concept_code>` at its start with the end in `end`:
    inpatient visits (IP, ERIP) are stays, other visits and an inpatient visit without an end are not."""
    assert parse_meds_code("Visit/IP").kind == "visit" and parse_meds_code("Visit/ERIP").kind == "visit"
    assert parse_meds_code("Visit/OP").kind == "ignored"
    rows = [(7, "2020-01-01", "ICD10CM/E11.65"), (7, "2020-01-01", "Visit/IP"), (7, "2020-03-01", "Visit/OP"),
            (7, "2020-05-01", "Visit/IP"), (7, "2021-01-01", "Visit/ERIP")]
    ends = [None, "2020-01-05 14:00", "2020-03-01", None, "2022-06-01"]
    write_shard(tmp_path / "omop" / "data" / "0.parquet", rows, end=ends)
    reader = MedsReader(tmp_path / "omop")
    (p,) = list(reader)
    assert p["hospitalizations"] == [{"admission_date": "2020-01-01", "discharge_date": "2020-01-05"},
                                     {"admission_date": "2021-01-01", "discharge_date": "2022-06-01"}]
    assert reader.ignored == {"Visit": 1, "Visit (no end)": 1}
    assert reader.kept == {"ICD10CM": 1, "Visit": 2}
    assert convert(tmp_path / "omop", tmp_path / "out" / "o.pt") == 0
    man = json.loads((tmp_path / "out" / "dataset_manifest.json").read_text())
    assert man["implausible_stays"]["left_out"] == 1      # the 517-day ERIP visit
    assert PatientDataset.load(tmp_path / "out" / "o_train.pt").stays(0).tolist() == [4]


def test_end_column_of_the_wrong_type_is_a_file_level_error(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"subject_id": [1], "time": pa.array([dt.datetime(2020, 1, 1)], pa.timestamp("us")),
                             "code": ["Visit/IP"], "end": ["2020-01-02"]}), path)
    with pytest.raises(UserError, match="column 'end' is string; MEDS requires a timestamp"):
        list(MedsReader(path))
