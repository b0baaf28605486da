"""The input-format seam (exmed_bert.convert.formats): a format is one module and one registration line,
and the pass and the workers drive any format the same way. The example is a CSV of events
(tests/example_csv_format.py), registered here the way a new format is: one line in FORMATS."""

import ast
import json
from pathlib import Path

import pytest

import exmed_bert.convert as convert_pkg
from exmed_bert.convert import ConvertArgs, convert_patients, formats
from exmed_bert.convert.intake import Intake
from exmed_bert.convert.workers import plan_workers
from example_csv_format import CsvSource
from test_meds_fastpath import outputs

CODES = ["E11.9", "I10", "E78.5", "J45.909", "N18.3", "I50.9", "K21.9"]


@pytest.fixture
def csv_format(monkeypatch):
    monkeypatch.setattr(formats, "FORMATS", (CsvSource, *formats.FORMATS))   # the registration line


def events(n: int = 120) -> list[tuple]:
    """(patient_id, date, code, system) rows, a patient's rows together; some patients carry an ATC code
    (a per-record event inside a block), one a malformed date (a reject), and one comes back at the end
    (a duplicate, rejected as in any format)."""
    rows = []
    for i in range(n):
        pid = f"P{i:03d}"
        for k in range(1 + i % 5):
            rows.append((pid, f"201{i % 9}-0{1 + k}-1{k}", CODES[(i + k) % len(CODES)], ""))
        if i % 7 == 0:
            rows.append((pid, "2019-05-05", "N02BE01", "atc"))
        if i == 10:
            rows.append((pid, "2018-13-01", "I10", ""))   # no 13th month
    rows += [("P003", "2020-02-02", "I10", "")]           # P003 again: a duplicate record
    return rows


def write_csv(path: Path, rows) -> Path:
    path.write_text("patient_id,date,code,system\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def write_jsonl(path: Path, rows) -> Path:
    """The same patients as the guide's JSONL, record for record."""
    records: list[dict] = []
    for pid, date, code, system in rows:
        if not records or records[-1]["patient_id"] != pid:
            records.append({"patient_id": pid, "diagnoses": []})
        records[-1]["diagnoses"].append({"code": code, "date": date, **({"system": system} if system else {})})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_new_format_gets_the_fast_path_and_workers_from_the_seam(tmp_path, csv_format, monkeypatch):
    src = write_csv(tmp_path / "events.csv", events())
    task = tmp_path / "task.csv"
    task.write_text("patient_id,label,prediction_date\n" + "".join(
        f"P{i:03d},{i % 2},{'2016-06-01' if i % 3 else ''}\n" for i in range(0, 120, 2)))
    assert formats.detect(src) is CsvSource
    source = CsvSource(src, ConvertArgs(input=str(src)))
    n, pieces = plan_workers(source, 2)
    assert n == 2 and len(pieces) == 5   # 120 patients, 25 a piece

    blocks = {1: [], 2: []}   # the fast path: columnar blocks into the pass of this process
    real = Intake.block
    files = {}
    for w in (1, 2):
        monkeypatch.setattr(Intake, "block", lambda self, fb, record_of, w=w: blocks[w].append(fb.n) or
                            real(self, fb, record_of))
        man = convert_patients(src, tmp_path / f"w{w}" / "ds.pt", task_data=task, workers=w, progress=False)
        files[w] = outputs(tmp_path / f"w{w}")
    assert blocks[1] == [25, 25, 25, 25, 21]   # --workers 1: the CSV in 5 blocks, in this process
    # --workers 2: the same bytes; the workers took every piece, and this process converted again only the
    # last one, where P003 comes back (a patient id of an earlier piece: the reference rules decide)
    assert files[1] == files[2] and blocks[2] == [21]
    assert man["records"] == 121 and man["reject_reasons"] == {"duplicate patient_id": 1, "bad date": 1}

    # ... and the same datasets as the guide's JSONL of the same patients
    convert_patients(write_jsonl(tmp_path / "events.jsonl", events()), tmp_path / "jsonl" / "ds.pt", task_data=task,
                     progress=False)
    jsonl = outputs(tmp_path / "jsonl")
    for name, data in files[1].items():
        if not name.endswith(".json"):   # manifests name their input
            assert jsonl[name] == data, name
        elif name == "vocab.json":
            assert jsonl[name] == data


def test_the_pass_and_the_workers_import_no_format():
    """The pass, the workers, the task-dataset build and the speed machinery reach an input only through
    formats.detect and the Source methods: none of them imports a format's module or reader."""
    root = Path(convert_pkg.__file__).parent
    readers = {"exmed_bert.convert.meds", "exmed_bert.convert.records", "exmed_bert.convert.meds_block",
               "exmed_bert.convert.shard_parts", "pyarrow"} | {
        f"exmed_bert.convert.formats.{p.stem}" for p in (root / "formats").glob("*.py") if p.stem not in ("__init__", "base")}
    assert len(readers) >= 8
    for name in ("conversion.py", "workers.py", "intake.py", "task_datasets.py", "speed.py", "processes.py"):
        tree = ast.parse((root / name).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not imported & readers, (name, imported & readers)


def test_formats_are_asked_in_order_and_the_guides_json_takes_the_rest(tmp_path, csv_format):
    (tmp_path / "d").mkdir()
    (tmp_path / "p.jsonl").write_text('{"patient_id": "a"}\n')
    (tmp_path / "p.json").write_text('{"patients": []}')
    (tmp_path / "lines.txt").write_text('{"patient_id": "a"}\n')
    kinds = {name: formats.detect(tmp_path / name).__name__ for name in
             ("d", "x.parquet", "p.jsonl", "lines.txt", "p.json", "e.csv", "missing.json")}
    assert kinds == {"d": "MedsSource", "x.parquet": "MedsSource", "p.jsonl": "JsonlSource", "lines.txt": "JsonlSource",
                     "p.json": "JsonSource", "e.csv": "CsvSource", "missing.json": "JsonSource"}
