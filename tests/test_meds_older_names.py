"""MEDS written before version 0.3.2 names subject_id `patient_id` (and before 0.3.0, time `timestamp`).
Such data, subject splits and labels are read as they are: every output is the one the current names give,
in one process and in workers, streamed, whole (an unsorted shard) and in row-group parts."""

import datetime as dt
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.convert.args import ConvertArgs
from exmed_bert.convert.formats import meds as meds_format
from exmed_bert.convert.conversion import convert_patients
from exmed_bert.convert.labels import read_task_csv
from exmed_bert.convert.meds import MedsReader
from exmed_bert.convert.meds_names import as_file, current
from test_meds_fastpath import nasty_subjects, write_fixture
from test_meds_fastpath import outputs as fastpath_outputs

OLD = {"subject_id": "patient_id", "time": "timestamp"}


def older(path):
    """Rewrite a Parquet file with the older MEDS names, row groups kept."""
    f = pq.ParquetFile(path)
    table = f.read()
    table = table.rename_columns([OLD.get(n, n) for n in table.column_names])
    pq.write_table(table, path, row_group_size=max(1, f.metadata.row_group(0).num_rows))


def pair(tmp_path, build):
    """The same MEDS root twice: current names, and older names in every data and split file."""
    new = build(tmp_path / "new")
    old = tmp_path / "old"
    shutil.copytree(new, old)
    for f in sorted(old.rglob("*.parquet")):
        older(f)
    assert "patient_id" in pq.read_schema(next((old / "data").glob("*.parquet"))).names
    return new, old


def outputs(folder):
    """The files a conversion wrote (test_meds_fastpath.outputs), without the manifests' input paths and
    fingerprints, which differ between the two roots."""
    out = fastpath_outputs(folder)
    for m in (v for k, v in out.items() if k.endswith("manifest.json")):
        for k in ("input", "input_fingerprint"):
            m.pop(k, None)
        for k in ("task_data", "task_fingerprint"):
            m.get("task", {}).pop(k, None)
    return out


def labels(path, ids, id_name):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({id_name: pa.array(ids, pa.int64()),
                             "prediction_time": pa.array([dt.datetime(2020, 3, 4, 12)] * len(ids), pa.timestamp("us")),
                             "boolean_value": pa.array([i % 2 == 0 for i in range(len(ids))])}), path)
    return path


def with_splits(root):
    n = len(nasty_subjects()) * 3
    (root / "metadata").mkdir()
    pq.write_table(pa.table({"subject_id": pa.array(range(1000, 1000 + n), pa.int64()),
                             "split": [["train", "tuning", "held_out"][i % 3] for i in range(n)]}),
                   root / "metadata" / "subject_splits.parquet")
    return root


def test_names_are_mapped_only_where_a_file_lacks_the_current_one():
    assert as_file(["subject_id", "time", "code"], ["patient_id", "timestamp", "code"]) == ["patient_id", "timestamp",
                                                                                          "code"]
    assert as_file(["subject_id", "time"], ["subject_id", "patient_id", "time"]) == ["subject_id", "time"]
    batch = pa.RecordBatch.from_pydict({"patient_id": [1], "code": ["x"]})
    assert current(batch).schema.names == ["subject_id", "code"] and current(batch.schema).names == ["subject_id",
                                                                                                     "code"]
    table = pa.table({"subject_id": [1]})
    assert current(table) is table


@pytest.mark.parametrize("workers_n", [1, 2])
def test_older_names_give_the_same_outputs(tmp_path, workers_n):
    new, old = pair(tmp_path, lambda p: with_splits(write_fixture(p, nasty_subjects() * 3, shards=3, values=True)))
    ids = list(range(1000, 1000 + len(nasty_subjects()) * 3, 2))
    files = {}
    for name, root, id_name in (("new", new, "subject_id"), ("old", old, "patient_id")):
        out = tmp_path / f"out_{name}"
        manifest = convert_patients(root, out / "ds.pt", progress=False, workers=workers_n, other_codes="keep",
                                    value_bins=3, task_data=labels(tmp_path / f"l_{name}.parquet", ids, id_name))
        assert manifest["split_source"] == "meds" and manifest["value_bins"]["codes_binned"] > 0
        files[name] = outputs(out)
    assert files["old"] == files["new"]


@pytest.mark.parametrize("case", ["row-group parts", "unsorted shard"])
def test_older_names_in_one_shard_cut_into_parts_or_read_whole(tmp_path, monkeypatch, case):
    monkeypatch.setattr(meds_format, "MIN_PART_ROWS", 20)

    def build(p):
        root = write_fixture(p, nasty_subjects() * 3, shards=1)
        table = pq.read_table(root / "data" / "0.parquet")
        if case == "unsorted shard":
            table = table.take(list(range(table.num_rows))[::-1])
        pq.write_table(table, root / "data" / "0.parquet", row_group_size=7)
        return root

    new, old = pair(tmp_path, build)
    if case == "row-group parts":
        assert len(meds_format.MedsSource(old, ConvertArgs(input=str(old))).pieces(2)) >= 3   # cut by the older subject id's statistics
    files = {}
    for name, root in (("new", new), ("old", old)):
        convert_patients(root, tmp_path / f"out_{name}" / "ds.pt", progress=False, workers=2)
        files[name] = outputs(tmp_path / f"out_{name}")
    assert files["old"] == files["new"]


def test_older_label_files_read_as_current_ones(tmp_path):
    ids = [7, 8, 9]
    new = read_task_csv(labels(tmp_path / "new.parquet", ids, "subject_id"))
    old = read_task_csv(labels(tmp_path / "old.parquet", ids, "patient_id"))
    assert old.labels() == new.labels()
    assert {r.patient_id: r.label for r in new.rows.values()} == {"7": 1, "8": 0, "9": 1}
    assert {k: r.prediction_time for k, r in old.rows.items()} == {k: r.prediction_time for k, r in new.rows.items()}
