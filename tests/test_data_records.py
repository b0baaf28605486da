"""Reading patient records (JSON stream, JSONL) and rejecting bad ones with a reason."""

import json

import pytest

from exmed_bert.cli.convert import main as convert_main
from exmed_bert.convert.records import iter_patients
from exmed_bert.convert.validate import RecordParser, Reject
from exmed_bert.errors import UserError


def patient(pid="P1", **over):
    p = {"patient_id": pid, "birth_date": "1970-01-01", "sex": "F",
         "diagnoses": [{"code": "E11.65", "date": "2020-01-15"}, {"code": "I10", "date": "2020-02-20"}],
         "prescriptions": [{"code": "N02BE01", "date": "2020-01-16"}],
         "procedures": [{"code": "99213", "date": "2020-01-15"}],
         "hospitalizations": [{"admission_date": "2020-03-01", "discharge_date": "2020-03-09"}]}
    p.update(over)
    return p


def test_stream_reads_json_wrapper_across_buffer_refills(tmp_path, monkeypatch):
    import exmed_bert.convert.records as records

    monkeypatch.setattr(records, "_CHUNK", 7)  # force many partial reads mid-object and mid-number
    pats = [patient(f"P{i}") for i in range(5)]
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"metadata": {"n": 5}, "patients": pats, "extra": [1, 2.5]}, indent=1))
    assert [p["patient_id"] for p in iter_patients(path)] == [f"P{i}" for i in range(5)]


def test_jsonl_bare_array_and_bom_are_read(tmp_path):
    pats = [patient(f"P{i}") for i in range(3)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(p) for p in pats) + "\n\n")
    (tmp_path / "b.json").write_text("\ufeff" + json.dumps(pats), encoding="utf-8")
    (tmp_path / "c.json").write_text("\n".join(json.dumps(p) for p in pats))  # JSONL under .json
    for name in ("a.jsonl", "b.json", "c.json"):
        assert [p["patient_id"] for p in iter_patients(tmp_path / name)] == ["P0", "P1", "P2"]


@pytest.mark.parametrize("text, where", [
    ('{"patients": [\n  {"patient_id": "P1",,}\n]}', "line 2, column 23"),
    ('{"patient_id": "P1"}\n{"patient_id": oops}\n', "line 2, column 16"),
    ("hello", "line 1"),
])
def test_not_json_names_line_and_column(tmp_path, text, where):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=where):
        list(iter_patients(path))


@pytest.mark.parametrize("content, message", [
    (b"", "empty"), (b'{"patients": []}', "empty"), (b"\n\n", "empty"),
    (b'{"patients": [{"patient_id": "\xff\xfe"}]}', "UTF-8"),
])
def test_empty_and_non_utf8_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        list(iter_patients(path))


@pytest.mark.parametrize("over, reason", [
    ({"patient_id": None}, "missing patient_id"),
    ({"patient_id": ["a"]}, "patient_id must be text"),
    ({"birth_date": "2021-02-30"}, "bad date '2021-02-30'"),
    ({"diagnoses": [{"code": "E11.65", "date": "2021-02-30"}]}, "bad date"),
    ({"diagnoses": [{"code": "E11.65", "date": ["2020-01-01"]}]}, "must be a 'YYYY-MM-DD' string, got list"),
    ({"diagnoses": [{"code": 401, "date": "2020-01-01"}]}, "code must be text, got int"),
    ({"diagnoses": [{"code": "E11.65"}]}, "without a date"),
    ({"diagnoses": [{"code": "!!", "date": "2020-01-01"}]}, "unparseable icd10cm code"),
    ({"diagnoses": [{"code": "E" * 40, "date": "2020-01-01"}]}, "code too long"),
    # an unknown system name is an other code (--other-codes, tests/test_other_codes.py), not a reject
    ({"diagnoses": [{"code": "E11", "date": "2020-01-01", "system": 5}]}, "code system must be a name, got 5"),
    ({"hospitalizations": [{"admission_date": "2020-03-09", "discharge_date": "2020-03-01"}]},
     "discharge_date 2020-03-01 is before admission_date"),
    ({"birth_date": "2020-02-01"}, "birth_date 2020-02-01 is after the first event"),
    ({"sex": "X"}, "unknown sex"),
    ({"diagnoses": "E11"}, "diagnoses must be a list"),
])
def test_each_bad_record_is_rejected_with_its_reason(over, reason):
    with pytest.raises(Reject, match=reason.replace("(", r"\(")):
        RecordParser().parse(patient(**over))


def test_good_record_normalises_codes_and_keeps_stays():
    rp = RecordParser()
    p = rp.parse(patient(diagnoses=[{"code": "E1165", "date": "2020-01-15"},
                                    {"code": "250.00", "date": "2020-01-15", "system": "icd9cm"}]))
    assert p.patient_id == "P1" and p.sex == 1 and p.stays == [8] and p.stay_starts == [18322]  # 2020-03-01
    assert [rp.tokens[t] for t in p.toks[:2]] == ["icd10cm:E11.65", "icd9cm:250.00"]
    assert rp.tokens[p.toks[2]] == "atc:N02BE01" and rp.tokens[p.toks[3]] == "cpt:99213"
    assert p.days[0] == 18276  # 2020-01-15 in days since 1970-01-01


def write_jsonl(path, pats):
    path.write_text("".join(json.dumps(p) + "\n" for p in pats))


def test_cli_skips_bad_records_into_rejects_file_and_fails_on_request(tmp_path, capsys):
    pats = [patient(f"P{i}") for i in range(20)]
    pats[3]["patient_id"] = None
    pats[5]["birth_date"] = "2021-02-30"
    pats.append(patient("P7"))  # duplicate id
    write_jsonl(tmp_path / "in.jsonl", pats)
    out = tmp_path / "out" / "ds.pt"
    assert convert_main(["--input", str(tmp_path / "in.jsonl"), "--output", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "converted 18 of 21 patients" in summary and "rejected 3" in summary
    rejects = [json.loads(line) for line in (tmp_path / "out" / "ds_rejected.jsonl").read_text().splitlines()]
    assert [(r["record"], r["patient_id"]) for r in rejects] == [(4, None), (6, "P5"), (21, "P7")]
    assert "duplicate patient_id 'P7'" in rejects[2]["reason"]
    man = json.loads((tmp_path / "out" / "dataset_manifest.json").read_text())
    assert man["rejected"] == 3 and sum(s["patients"] for s in man["splits"].values()) == 18

    assert convert_main(["--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--on-error", "fail"]) == 2
    err = capsys.readouterr().err
    assert "record 4" in err and "missing patient_id" in err


def test_cli_exit_2_on_non_json_and_all_rejected(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"patients": [ {"patient_id": 1 ]}')
    assert convert_main(["--input", str(tmp_path / "bad.json"), "--output", str(tmp_path / "o.pt")]) == 2
    assert "line 1, column" in capsys.readouterr().err
    write_jsonl(tmp_path / "none.jsonl", [{"patient_id": None}])
    assert convert_main(["--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "o.pt")]) == 2
    assert "all 1 records were rejected" in capsys.readouterr().err


# bad or unusual records the columnar path must flag one by one (its block stays columnar)
RECORD_LEVEL = [
    {"patient_id": None}, {"patient_id": ""}, {"birth_date": "2021-02-30"}, {"sex": "X"}, {"sex": " female "},
    {"sex": None}, {"birth_date": None}, {"diagnoses": [{"code": "E11.65", "date": "2021-02-30"}]},
    {"diagnoses": [{"code": "E11.65", "date": None}]}, {"diagnoses": [None]}, {"diagnoses": [{"code": "E11.65"}]},
    {"diagnoses": [{"code": "!!", "date": "2020-01-01"}]}, {"diagnoses": [{"code": "E" * 40, "date": "2020-01-01"}]},
    {"diagnoses": [{"code": "E11", "date": "2020-01-01", "system": "snomed"}]},
    {"diagnoses": [{"code": "250.00", "date": "2020-01-15", "system": "icd9cm"},
                   {"code": "250.00", "date": "2020-01-15", "system": "phecode"}]},
    {"diagnoses": [{"code": "E1165", "date": "2020-01-15T08:00", "system": None, "note": "x"}]},
    {"hospitalizations": [{"admission_date": "2020-03-09", "discharge_date": "2020-03-01"}]},
    {"hospitalizations": [None]}, {"hospitalizations": [{"admission_date": "2020-03-09"}]},
    {"birth_date": "2020-02-01"}, {"birth_date": "2020-03-05"},
    {"diagnoses": [], "prescriptions": None, "procedures": []}, {"patient_id": "P1"}, {"patient_id": "P\u00e9"},
    {"birth_date": "0000-01-01"}]
# records whose JSON types make the whole block take the per-record reader
BLOCK_LEVEL = [{"patient_id": True}, {"patient_id": 1.5}, {"birth_date": 19700101}, {"diagnoses": "E11"},
               {"diagnoses": [{"code": 401, "date": "2020-01-01"}]}, {"patient_id": 12345}]


def mixed_records():
    """Good records interleaved with every kind of bad or unusual one (as JSONL lines)."""
    lines = []
    for i in range(150):
        p = patient(f"P{i}", diagnoses=[{"code": ["E11.65", "I10", "E1165", "J45.909", "Z00.00"][i % 5],
                                         "date": f"20{10 + i % 9}-0{1 + i % 9}-1{i % 10}"},
                                        {"code": f"E11.{i % 7}", "date": "2020-01-15"}])
        lines.append(json.dumps(p))
        if i % 5 == 0 and i // 5 < len(RECORD_LEVEL):
            lines.append(json.dumps(patient(f"B{i}", **RECORD_LEVEL[i // 5])))
        if i >= 125 and i % 4 == 0 and (i - 125) // 4 < len(BLOCK_LEVEL):
            lines.append(json.dumps(patient(f"C{i}", **BLOCK_LEVEL[(i - 125) // 4])))
    lines[50] += "\r"                      # a CRLF line
    lines[-8] = json.dumps([1, 2])         # not an object
    lines[-4] = ""                         # a blank line
    return "\n".join(lines) + "\n"


def test_fast_path_matches_per_record_path_on_mixed_file(tmp_path, monkeypatch):
    import torch

    import exmed_bert.convert.intake as intake
    import exmed_bert.convert.records as records
    from exmed_bert.convert.conversion import convert_patients, output_paths

    monkeypatch.setattr(records, "BLOCK_BYTES", 2500)  # many blocks: clean ones, mixed ones, unparseable ones
    (tmp_path / "in.jsonl").write_text(mixed_records())
    (tmp_path / "task.csv").write_text("patient_id,label,prediction_date\n"
                                       + "".join(f"P{i},{i % 2},{'2016-01-01' if i % 3 else ''}\n" for i in range(0, 120, 2)))
    flagged = []  # records flagged inside columnar blocks
    block = intake.Intake.block
    monkeypatch.setattr(intake.Intake, "block", lambda self, fb, record_of: (
        flagged.extend(record_of(i) for i in fb.slow.nonzero()[0]), block(self, fb, record_of))[1])
    mans = {}
    for fast in (False, True):
        out = tmp_path / str(fast) / "ds.pt"
        mans[fast] = convert_patients(tmp_path / "in.jsonl", out, task_data=tmp_path / "task.csv", fast=fast,
                                      progress=False)
    # the columnar path met every record-level kind next to good records, and flagged exactly the bad
    # ones (unknown sex/birth, " female ", a null system, a repeated id and "Pé" are accepted or
    # caught later as a duplicate)
    kinds = {i for i, kind in enumerate(RECORD_LEVEL) for f in flagged
             if str(f.get("patient_id")).startswith("B") and all(f.get(k) == v for k, v in kind.items())}
    kinds |= {i for i, kind in enumerate(RECORD_LEVEL) if "patient_id" in kind
              for f in flagged if f.get("patient_id") == kind["patient_id"]}
    assert kinds == set(range(len(RECORD_LEVEL))) - {4, 5, 6, 15, 22, 23}
    same = [{k: v for k, v in m.items() if k != "args"} for m in (mans[True], mans[False])]   # args: output path
    assert same[0] == same[1] and mans[True]["rejected"] > 20
    a, b = output_paths(tmp_path / "False" / "ds.pt"), output_paths(tmp_path / "True" / "ds.pt")
    ta, tb = output_paths(tmp_path / "False" / "ds.pt", task=True), output_paths(tmp_path / "True" / "ds.pt", task=True)
    for x, y in [(a["vocab"], b["vocab"]), (a["rejected"], b["rejected"])]:
        assert x.read_bytes() == y.read_bytes()
    for x, y in [(a[s], b[s]) for s in ("train", "val", "test")] + [(ta[s], tb[s]) for s in ("train", "val", "test")]:
        da, db = torch.load(x, weights_only=True), torch.load(y, weights_only=True)
        assert da.keys() == db.keys()
        for k in da:
            if isinstance(da[k], torch.Tensor):
                assert da[k].dtype == db[k].dtype and torch.equal(da[k], db[k]), k
            else:
                assert da[k] == db[k], k
