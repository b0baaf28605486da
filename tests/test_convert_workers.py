"""Issue 18 (scale): `--workers N` converts MEDS shards or JSONL blocks in worker processes, and every output
file is byte-identical to a conversion in one process: rejects and their record numbers, duplicates across
pieces, task datasets, MEDS subject splits, --on-error fail."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import exmed_bert.convert.records as records
import exmed_bert.convert.workers as workers
from exmed_bert.convert.args import ConvertArgs
from exmed_bert.convert.conversion import convert_patients
from exmed_bert.convert.formats import meds as meds_format
from exmed_bert.convert.formats.base import Source
from exmed_bert.convert.formats.meds import MedsSource
from exmed_bert.convert.processes import AUTO_MIN_BYTES
from exmed_bert.errors import UserError
from test_data_records import mixed_records
from test_meds_fastpath import labels_at_noon, nasty_subjects, outputs, write_fixture


def convert_with(n: int, input, tmp_path, **kw) -> dict:
    out = tmp_path / f"w{n}"
    convert_patients(input, out / "ds.pt", progress=False, workers=n, **kw)
    return outputs(out)


def convert_both(input, tmp_path, **kw) -> dict:
    return {n: convert_with(n, input, tmp_path, **kw) for n in (1, 2)}


def assert_same(files):
    assert files[1].keys() == files[2].keys()
    for name in files[1]:
        assert files[2][name] == files[1][name], name



def test_meds_labels_with_prediction_times_in_workers(tmp_path):
    """The prediction-time cut needs each event's time: workers read them as the main process does."""
    subjects = nasty_subjects() * 2
    root = write_fixture(tmp_path / "meds", subjects, shards=2)
    labels = labels_at_noon(tmp_path / "labels.parquet", list(range(1000, 1000 + len(subjects))))
    files = convert_both(root, tmp_path, task_data=labels)
    assert_same(files)
    assert files[2]["dataset_manifest.json"]["task"]["cut"] == "at or before prediction_time"

def test_meds_shards_in_workers_write_the_one_process_files(tmp_path, monkeypatch):
    subjects = nasty_subjects() * 4
    root = write_fixture(tmp_path / "meds", subjects, shards=3)
    # a subject with rows in a later shard too (MEDS allows it): one subject, read from its first shard
    first = pq.read_table(root / "data" / "0.parquet")
    dup = first.filter(pa.compute.equal(first["subject_id"], 1000))
    pq.write_table(pa.concat_tables([dup, pq.read_table(root / "data" / "2.parquet")]).sort_by("subject_id"),
                   root / "data" / "2.parquet")
    (root / "metadata").mkdir()
    pq.write_table(pa.table({"subject_id": pa.array(range(1000, 1000 + len(subjects)), pa.int64()),
                             "split": [["train", "tuning", "held_out", "other"][i % 4] for i in range(len(subjects))]}),
                   root / "metadata" / "subject_splits.parquet")
    task = tmp_path / "task.csv"
    task.write_text("patient_id,label,prediction_date\n" + "".join(
        f"{1000 + i},{i % 2},{'2020-03-04' if i % 3 else ''}\n" for i in range(0, len(subjects), 2)))
    files = {1: convert_with(1, root, tmp_path, task_data=task, other_codes="keep")}
    again = []   # pieces the main process converted again (a patient id of an earlier piece)
    real = MedsSource.feed
    monkeypatch.setattr(MedsSource, "feed", lambda self, run, piece: again.append(piece.file) or real(self, run, piece))
    files[2] = convert_with(2, root, tmp_path, task_data=task, other_codes="keep")
    assert_same(files)
    assert again == [str(root / "data" / "2.parquet")]
    man = files[2]["dataset_manifest.json"]
    assert man["split_source"] == "meds" and man["patients_outside_the_meds_splits"] > 0
    assert man["subjects_in_several_files"] == 1
    assert not any("duplicate patient_id" in line for line in files[2]["ds_rejected.jsonl"].decode().splitlines())


def one_shard(tmp_path, subjects, *, unsorted_group=False, **kw):
    """One Parquet file in row groups of 7 rows, so most subjects span two or more row groups."""
    root = write_fixture(tmp_path / "src", subjects, shards=1, **kw)
    table = pq.read_table(root / "data" / "0.parquet")
    if unsorted_group:   # two subjects swapped inside one row group: the group stats stay in order
        idx = list(range(table.num_rows))
        i = next(j for j in range(21, table.num_rows - 1)
                 if table["subject_id"][j].as_py() != table["subject_id"][j + 1].as_py() and (j + 1) % 7)
        idx[i], idx[i + 1] = idx[i + 1], idx[i]
        table = table.take(idx)
    (tmp_path / "one" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "one" / "data" / "0.parquet", row_group_size=7)
    return tmp_path / "one"


@pytest.mark.parametrize("case", ["int ids", "unsorted row group", "text ids", "value bins"])
def test_one_shard_cut_into_row_group_parts_writes_the_one_process_files(tmp_path, monkeypatch, case):
    """A dataset in one shard is shared by the workers in row-group parts, cut by subject_id ranges: a
    subject whose rows span a cut is converted once, by the part that owns it."""
    monkeypatch.setattr(meds_format, "MIN_PART_ROWS", 20)
    root = one_shard(tmp_path, nasty_subjects() * 3, unsorted_group=case == "unsorted row group",
                     text_ids=case == "text ids", values=case == "value bins")
    from exmed_bert.convert.meds import MedsReader
    from exmed_bert.convert.shard_parts import shard_parts
    parts = MedsSource(root, ConvertArgs(input=str(root))).pieces(2)
    if case == "text ids":   # no exact integer statistics to cut by: the shard is one piece
        assert [p.part for p in parts] == [None]
    else:
        assert len(parts) >= 3 and all(p.part is not None for p in parts)
        spans = [p.part for p in parts if p.part.first < parts[parts.index(p) - 1].part.end]
        assert spans, "no subject spans a cut: the fixture does not test the boundary rule"
    task = tmp_path / "task.csv"
    n = len(nasty_subjects()) * 3
    task.write_text("patient_id,label,prediction_date\n" + "".join(
        f"{'S' if case == 'text ids' else ''}{1000 + i},{i % 2},{'2020-03-04' if i % 3 else ''}\n"
        for i in range(0, n, 2)))
    files = convert_both(root, tmp_path, task_data=task, other_codes="keep",
                         value_bins=4 if case == "value bins" else 0)
    assert_same(files)
    assert files[1]["dataset_manifest.json"]["records"] == n
    if case == "value bins":
        assert files[1]["dataset_manifest.json"]["value_bins"]["codes_binned"] > 0
    assert shard_parts(root / "data" / "0.parquet", 10 ** 9) is None   # parts bigger than the shard: none
    if case != "text ids":   # the per-record reader takes the same parts: together, every patient once
        reader, path = MedsReader(root), root / "data" / "0.parquet"
        whole = list(reader._read_file(path, reader._patients))
        assert [r for p in parts for r in reader._read_file(path, reader._patients, p.part)] == whole


def test_jsonl_blocks_in_workers_write_the_one_process_files(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BLOCK_BYTES", 2500)    # many blocks (the main process cuts them)
    (tmp_path / "in.jsonl").write_text(mixed_records())
    task = tmp_path / "task.csv"
    task.write_text("patient_id,label,prediction_date\n"
                    + "".join(f"P{i},{i % 2},{'2016-01-01' if i % 3 else ''}\n" for i in range(0, 120, 2)))
    files = convert_both(tmp_path / "in.jsonl", tmp_path, task_data=task)
    assert_same(files)
    rejects = [json.loads(line) for line in files[2]["ds_rejected.jsonl"].decode().splitlines()]
    assert len(rejects) > 20 and rejects[-1]["record"] > 150   # numbered across the whole file


def test_on_error_fail_names_the_same_first_bad_record(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "BLOCK_BYTES", 2500)
    def line(pid, **kw):
        return json.dumps({"patient_id": pid, "birth_date": "1960-01-01", "sex": "F",
                           "diagnoses": [{"code": "E11.65", "date": "2020-01-01"}], **kw})
    good = [line(f"P{i}") for i in range(120)]
    (tmp_path / "in.jsonl").write_text("\n".join(good[:60] + [line("B1", sex="X")] + good[60:]
                                                 + [line("B2", birth_date="2021-02-30")]) + "\n")
    errors = {}
    for n in (1, 2):
        with pytest.raises(UserError) as e:
            convert_patients(tmp_path / "in.jsonl", tmp_path / f"w{n}" / "ds.pt", progress=False, workers=n,
                             on_error="fail")
        errors[n] = str(e.value)
    assert errors[1] == errors[2] and "record 61 (patient_id 'B1'): unknown sex" in errors[1]
    assert len((tmp_path / "in.jsonl").read_bytes()) > 3 * 2500   # the bad record is not in the first block


def test_how_many_workers(tmp_path):
    from exmed_bert.convert.formats.guide_json import JsonSource

    root = write_fixture(tmp_path / "meds", nasty_subjects(), shards=2)
    source = MedsSource(root, ConvertArgs(input=str(root)))
    assert workers.plan_workers(source, None) == (1, None)          # small input: this process
    n, pieces = workers.plan_workers(source, 8)
    assert n == 2 and [p.file for p in pieces] == [str(f) for f in source.reader.files]   # never more than pieces
    (tmp_path / "x.json").write_text('{"patients": []}')
    doc = JsonSource(tmp_path / "x.json", ConvertArgs(input=str(tmp_path / "x.json")))
    assert workers.plan_workers(doc, 4) == (1, None)                # a JSON document is one piece
    with pytest.raises(UserError, match="--workers must be at least 1"):
        ConvertArgs(workers=0).validate()


class Sized(Source):
    """A source of `size` bytes in 100 pieces whose one process keeps `busy_cores` cores busy."""
    def __init__(self, size: int, busy_cores: int):
        self._size, self.busy_cores = size, busy_cores

    def size(self) -> int:
        return self._size

    def pieces(self, workers: int) -> list:
        return list(range(100))


@pytest.mark.parametrize("cpus, busy, expected", [(2, 1, 2), (2, 2, 1), (8, 1, 8), (8, 2, 8), (1, 1, 1)])
def test_default_workers_by_input_and_cpus(monkeypatch, cpus, busy, expected):
    """Every CPU from 16 MB of input; a format whose one process already keeps 2 cores busy (JSONL parses
    the next block in a thread) stays in one process on 2 CPUs; small inputs always do."""
    monkeypatch.setattr(workers, "cpu_count", lambda: cpus)
    assert workers.plan_workers(Sized(AUTO_MIN_BYTES, busy), None)[0] == expected
    assert workers.plan_workers(Sized(AUTO_MIN_BYTES - 1, busy), None)[0] == 1
    assert workers.plan_workers(Sized(AUTO_MIN_BYTES - 1, busy), 3)[0] == 3   # asked for: taken as given


def test_workers_do_not_load_torch():
    code = ("import sys, exmed_bert.convert.workers, exmed_bert.convert.conversion; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_damaged_shard_is_the_same_one_line_error_with_workers(tmp_path):
    """Planning the pieces reads every shard's footer; a file that is not Parquet must still reach the
    reader's one-line error (exit 2), not an internal error."""
    root = write_fixture(tmp_path / "meds", nasty_subjects(), shards=1)
    (root / "data" / "1.parquet").write_bytes(b"not parquet\n")
    errors = {}
    for n in (1, 2):
        with pytest.raises(UserError) as e:
            convert_patients(root, tmp_path / f"w{n}" / "ds.pt", progress=False, workers=n)
        errors[n] = str(e.value)
    assert errors[1] == errors[2] and "1.parquet: not a MEDS Parquet file" in errors[2]
    assert not list((tmp_path / "w2").glob("*.pt"))
