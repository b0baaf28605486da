"""Issue 18: MEDS shards are streamed in row batches; a subject cut by a batch boundary is carried over,
an unsorted shard is read whole with a note, and either way the patients and every output file are
the same as reading the shard whole."""

import datetime as dt
import random
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.cli.convert import main as convert_main
from exmed_bert.convert import meds
from exmed_bert.convert.meds import MedsReader
from exmed_bert.errors import UserError


def subject_rows(sid, rng):
    """Rows of one subject in a writer's (shuffled within the subject) order: ties in time, codes
    that are ignored, a stay, an OMOP visit with and without an end, unpaired discharges."""
    day = lambda d: f"2020-{1 + d // 28:02d}-{1 + d % 28:02d}"  # noqa: E731
    rows = [(sid, "1960-05-05", "MEDS_BIRTH", None), (sid, "2019-12-31", f"GENDER//{'FM'[sid % 2]}", None)]
    for _ in range(rng.randint(0, 9)):
        d = day(rng.randint(0, 200))
        rows.append((sid, d, rng.choice(["ICD10CM//E11.65", "ICD10CM//I50.9", "ATC//N02BE01",
                                         "CPT//99214", "LAB//glucose", "SNOMED//1234"]), None))
        rows.append((sid, d, rng.choice(["ICD10CM//J06.9", "ATC//C09AA05", "LAB//sodium"]), None))
    if rng.random() < 0.4:
        rows += [(sid, "2020-03-01", "HOSPITAL_ADMISSION//IP", None), (sid, "2020-03-05", "HOSPITAL_DISCHARGE//HOME", None)]
    if rng.random() < 0.3:
        rows.append((sid, "2020-04-01", "Visit/IP", "2020-04-03"))
    if rng.random() < 0.2:
        rows.append((sid, "2020-05-01", "Visit/IP", None))
    if rng.random() < 0.2:
        rows.append((sid, "2020-06-01", "HOSPITAL_DISCHARGE//HOME", None))
    rng.shuffle(rows)
    return rows


def fixture_rows(seed=0, n=40):
    rng = random.Random(seed)
    rows = []
    for sid in range(100, 100 + n):
        rows += subject_rows(sid, rng) if sid % 13 else [(sid, "2020-01-01", "LAB//glucose", None)] * 3
    return rows   # sorted by subject_id, not by time within a subject


def write_shard(path, rows, row_group_size=None):
    stamp = lambda s: None if s is None else dt.datetime.fromisoformat(s)  # noqa: E731
    table = pa.table({"subject_id": pa.array([r[0] for r in rows], pa.int64()),
                      "time": pa.array([stamp(r[1]) for r in rows], pa.timestamp("us")),
                      "code": pa.array([r[2] for r in rows], pa.string()),
                      "end": pa.array([stamp(r[3]) for r in rows], pa.timestamp("us"))})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def write_root(root, shards):
    for i, rows in enumerate(shards):
        write_shard(root / "data" / f"{i}.parquet", rows, row_group_size=17)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    return root


def whole(monkeypatch):
    """Make every shard take the whole-file path (the reader as it was before streaming)."""
    scan = MedsReader._scan
    monkeypatch.setattr(MedsReader, "_scan", lambda self, file, part=None: (False, scan(self, file, part)[1]))


def read(root, batch_rows=None):
    reader = MedsReader(root)
    if batch_rows is not None:
        reader.batch_rows = batch_rows
    return list(reader), list(reader.kept.items()), list(reader.ignored.items())


@pytest.fixture
def sorted_root(tmp_path):
    rows = fixture_rows()
    cut = next(i for i, r in enumerate(rows) if r[0] == 121)   # MEDS shards by subject
    return write_root(tmp_path / "meds", [rows[:cut], rows[cut:]])


def test_streamed_patients_match_the_whole_file_read(sorted_root, monkeypatch):
    streamed = {b: read(sorted_root, b) for b in (1, 2, 3, 7, 1 << 16)}
    with monkeypatch.context() as m:
        whole(m)
        reference = read(sorted_root)
    assert len(reference[0]) == 40 and any(p["hospitalizations"] for p in reference[0])
    assert any(not p["diagnoses"] and not p["prescriptions"] for p in reference[0])   # LAB-only subjects
    assert dict(reference[2])["LAB"] > 0 and dict(reference[2])["Visit (no end)"] > 0
    for b, got in streamed.items():
        assert got == reference, f"batch_rows={b}"   # patients, then kept/ignored counts in the same order


def test_sorted_shard_is_never_read_whole(sorted_root, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("pq.read_table called on a sorted shard")
    monkeypatch.setattr(meds.pq, "read_table", refuse)
    patients, _, _ = read(sorted_root, 5)
    assert [p["patient_id"] for p in patients] == list(range(100, 140))


def test_a_subject_across_many_batches(tmp_path, monkeypatch):
    rows = [(1, "2020-01-01", "ICD10CM//E11.65", None)] + [
        (2, f"2020-{1 + i % 12:02d}-{1 + i % 28:02d}", f"ICD10CM//I{10 + i % 40}.0", None) for i in range(50)] + [
        (3, "2020-01-01", "ATC//N02BE01", None)]
    write_shard(tmp_path / "one.parquet", rows)
    got = read(tmp_path / "one.parquet", 4)
    with monkeypatch.context() as m:
        whole(m)
        assert got == read(tmp_path / "one.parquet")
    assert [len(p["diagnoses"]) for p in got[0]] == [1, 50, 0]
    dates = [e["date"] for e in got[0][1]["diagnoses"]]
    assert dates == sorted(dates)


def test_conversion_outputs_are_byte_identical(sorted_root, tmp_path, monkeypatch):
    out = tmp_path / "out"   # one output path: the manifest names it

    def convert():
        assert convert_main(["--input", str(sorted_root), "--output", str(out / "ds.pt"), "--train-ratio", "0.6"]) == 0
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
        shutil.rmtree(out)
        return files
    monkeypatch.setattr(MedsReader, "batch_rows", 3)
    streamed = convert()
    with monkeypatch.context() as m:
        whole(m)
        reference = convert()
    assert len(streamed) >= 4 and streamed.keys() == reference.keys()
    for name in streamed:
        if name.endswith("run_config.json"):   # says when it ran
            streamed[name], reference[name] = (re.sub(rb'"created": "[^"]*"', b"", f[name]) for f in (streamed, reference))
        assert streamed[name] == reference[name], name


def test_unsorted_shard_is_read_whole_with_a_note(tmp_path, capsys):
    rows = fixture_rows(seed=1, n=12)
    shuffled = rows[:]
    random.Random(2).shuffle(shuffled)
    write_shard(tmp_path / "unsorted.parquet", shuffled, row_group_size=10)
    # the same rows sorted by subject (stable: each subject's rows keep the unsorted file's order)
    write_shard(tmp_path / "sorted.parquet", sorted(shuffled, key=lambda r: r[0]), row_group_size=10)
    got = read(tmp_path / "unsorted.parquet", 4)
    assert "unsorted.parquet is not sorted by subject_id" in capsys.readouterr().err
    assert got == read(tmp_path / "sorted.parquet", 4)
    assert "not sorted" not in capsys.readouterr().err
    assert [p["patient_id"] for p in got[0]] == list(range(100, 112))


def test_unsorted_across_batches_only_and_null_subject(tmp_path, capsys):
    # each batch is sorted but the second goes back: detected across the batch boundary
    rows = [(5, "2020-01-01", "ICD10CM//E11.65", None), (6, "2020-01-01", "ICD10CM//E11.65", None),
            (1, "2020-01-02", "ATC//N02BE01", None), (2, "2020-01-02", "ATC//N02BE01", None)]
    write_shard(tmp_path / "a.parquet", rows)
    assert [p["patient_id"] for p in read(tmp_path / "a.parquet", 2)[0]] == [1, 2, 5, 6]
    assert "not sorted" in capsys.readouterr().err
    write_shard(tmp_path / "b.parquet", [(None, "2020-01-01", "ICD10CM//E11.65", None)] + rows[:2])
    assert [p["patient_id"] for p in read(tmp_path / "b.parquet", 2)[0]] == [5, 6, None]
    assert "not sorted" in capsys.readouterr().err


def test_types_and_columns_are_checked_before_rows(tmp_path):
    bad = pa.table({"subject_id": pa.array([1], pa.int64()), "time": pa.array([1577836800], pa.int64()),
                    "code": ["ICD10CM//E11.65"]})
    pq.write_table(bad, tmp_path / "epoch.parquet")
    with pytest.raises(UserError, match="column 'time' is int64; MEDS requires a timestamp"):
        list(MedsReader(tmp_path / "epoch.parquet"))
    pq.write_table(bad.drop_columns(["code"]), tmp_path / "nocode.parquet")
    with pytest.raises(UserError, match=r"not a MEDS Parquet file .*\(no column code\)"):
        list(MedsReader(tmp_path / "nocode.parquet"))
    pq.write_table(bad.rename_columns(["patient_id", "timestamp", "code"]), tmp_path / "old.parquet")
    with pytest.raises(UserError, match="column 'timestamp' is int64"):   # an older MEDS name, as the file has it
        list(MedsReader(tmp_path / "old.parquet"))
    Path(tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="not a MEDS Parquet file"):
        list(MedsReader(tmp_path / "junk.parquet"))
    pq.write_table(bad.slice(0, 0).set_column(1, "time", pa.array([], pa.timestamp("us"))), tmp_path / "empty.parquet")
    assert list(MedsReader(tmp_path / "empty.parquet")) == []
