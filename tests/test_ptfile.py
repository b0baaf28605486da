"""Dataset files written without torch (exmed_bert.data.ptfile) read back with torch.load(weights_only=True)."""

import struct
import zipfile

import numpy as np
import pytest
import torch

from exmed_bert.data.ptfile import ALIGNMENT, Chunks, write_pt


def _everything():
    return {"format": "exmed-bert-dataset", "version": 1, "none": None, "yes": True, "no": False,
            "small": 7, "word": 60000, "neg": -5, "big": 2 ** 40, "huge_neg": -(2 ** 70), "float": 1.5,
            "text": "ümlaut ✓", "ids": [f"p{i}" for i in range(2500)], "mixed": ["a", 1, None, [2.5]],
            "tuple": (1, 2, 3, 4), "pair": ("a", 2), "empty_tuple": (), "nested": {"k": [1, 2], 3: "x"},
            "empty_list": [],
            **{f"a_{np.dtype(t).name}": np.arange(11).astype(t) for t in
               (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64)},
            "matrix": np.arange(12, dtype=np.float32).reshape(3, 4),
            "transposed": np.arange(6, dtype=np.int64).reshape(2, 3).T,   # not C-contiguous: written as values
            "empty": np.zeros(0, dtype=np.int64),
            "scalar": np.array(3, dtype=np.int32),
            "tensor": torch.arange(5, dtype=torch.int16),
            "streamed": Chunks(np.int16, 10, lambda: (np.arange(i, i + 5, dtype=np.int64) for i in (0, 5)))}


def _equal(a, b):
    if isinstance(b, torch.Tensor):
        b = b.numpy()
    if isinstance(a, Chunks):
        a = np.concatenate(list(a.chunks())).astype(a.dtype)
    if isinstance(a, torch.Tensor):
        a = a.numpy()
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("mmap", [False, True])
def test_every_supported_value_reads_back_with_weights_only(tmp_path, mmap):
    path = tmp_path / "x.pt"
    write_pt(path, _everything())
    back = torch.load(path, weights_only=True, mmap=mmap)
    expected = _everything()
    assert list(back) == list(expected)
    for k in expected:
        assert _equal(expected[k], back[k]), k


def test_same_layout_as_torch_save_and_aligned_records(tmp_path):
    data = {"format": "x", "a": np.arange(5, dtype=np.int32), "b": np.zeros(3, dtype=np.int8), "ids": ["p1"]}
    ours, theirs = tmp_path / "ours.pt", tmp_path / "theirs.pt"
    write_pt(ours, data)
    torch.save({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in data.items()}, theirs)
    with zipfile.ZipFile(ours) as z, zipfile.ZipFile(theirs) as t:
        # data.pkl, .format_version, ..., .data/serialization_id, under a folder of any name
        records = [n.split("/", 1)[1] for n in z.namelist()]
        assert records == [n.split("/", 1)[1] for n in t.namelist()]
        for name in records:
            if name.startswith("data/") or name in ("version", "byteorder", ".format_version", ".storage_alignment"):
                assert z.read(f"archive/{name}") == t.read(f"theirs/{name}"), name
        assert z.testzip() is None                          # every CRC right
    raw = ours.read_bytes()
    with zipfile.ZipFile(ours) as z:
        for info in z.infolist():                           # torch's mmap loading wants 64-byte aligned data
            n, e = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            assert (info.header_offset + 30 + n + e) % ALIGNMENT == 0, info.filename
    write_pt(tmp_path / "again.pt", data)
    assert (tmp_path / "again.pt").read_bytes() == raw      # deterministic


def test_zip64_records_stay_aligned_and_load(tmp_path, monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1000)       # as if the arrays were over 2 GiB
    data = {"big": np.arange(5000, dtype=np.int64), "small": np.arange(3, dtype=np.int8), "ids": ["a", "b"]}
    write_pt(tmp_path / "x.pt", data)
    monkeypatch.undo()
    back = torch.load(tmp_path / "x.pt", weights_only=True, mmap=True)
    assert back["big"].tolist() == list(range(5000)) and back["small"].tolist() == [0, 1, 2] and back["ids"] == ["a", "b"]


def test_bad_values_are_refused_and_leave_no_file(tmp_path):
    with pytest.raises(TypeError, match="set"):
        write_pt(tmp_path / "a.pt", {"x": {1, 2}})
    with pytest.raises(TypeError, match="complex"):
        write_pt(tmp_path / "b.pt", {"x": np.zeros(2, dtype=np.complex64)})
    with pytest.raises(ValueError, match="declared"):
        write_pt(tmp_path / "c.pt", {"x": Chunks(np.int32, 5, lambda: [np.arange(3)])})
    with pytest.raises(ValueError, match="declared"):
        write_pt(tmp_path / "d.pt", {"x": Chunks(np.int32, 2, lambda: [np.arange(3)])})
    assert list(tmp_path.iterdir()) == []                    # atomic: nothing half-written is left


def test_writeback_is_requested_over_the_records_data_only(tmp_path, monkeypatch):
    """Every 32 MB (here: 1 KB) the written range is handed to the kernel to start writing back: contiguous
    ranges, inside the streamed records, and the file is the same as without the requests."""
    import exmed_bert.data.ptfile as ptfile

    data = {"a": np.arange(3000, dtype=np.int32),
            "b": Chunks(np.int16, 4000, lambda: (np.arange(i, i + 500, dtype=np.int16) for i in range(0, 4000, 500)))}
    write_pt(tmp_path / "plain.pt", data)
    asked = []
    real = ptfile.start_writeback
    monkeypatch.setattr(ptfile, "_WRITEBACK", 1024)
    monkeypatch.setattr(ptfile, "start_writeback", lambda f, s, e: asked.append((s, e)) or real(f, s, e))
    write_pt(tmp_path / "hinted.pt", data)
    assert (tmp_path / "hinted.pt").read_bytes() == (tmp_path / "plain.pt").read_bytes()
    with zipfile.ZipFile(tmp_path / "hinted.pt") as z:
        spans = {}
        for info in z.infolist():
            if "/data/" in info.filename:
                start = info.header_offset + 30 + len(info.filename) + len(info.extra)
                spans[info.filename] = (start, start + info.file_size)
    assert sum(e - s for s, e in asked) > 12000 + 8000 - 2 * 1024   # all but each record's last < 1 KB
    for s, e in asked:
        assert e - s >= 1024 and any(a <= s and e <= b for a, b in spans.values())
    assert all(e0 <= s1 for (_, e0), (s1, _) in zip(asked, asked[1:]))


def test_a_failing_stream_stops_the_writer_and_leaves_no_file(tmp_path):
    def pieces():
        yield np.arange(5, dtype=np.int32)
        raise OSError("disk went away")

    with pytest.raises(OSError, match="went away"):
        write_pt(tmp_path / "x.pt", {"a": np.arange(4), "b": Chunks(np.int32, 10, pieces), "c": np.arange(2)})
    assert list(tmp_path.iterdir()) == []
