"""Atomic writes and run-info records."""

from __future__ import annotations

import json
import os

import pytest
import torch

from exmed_bert.io import atomic_write, save_torch, write_json, write_run_info


def test_atomic_write_keeps_previous_file_on_failure(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write('{"v": 2, "trunc')
            raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_save_torch_loads_with_weights_only(tmp_path):
    save_torch({"x": torch.arange(3)}, tmp_path / "d.pt")
    assert torch.load(tmp_path / "d.pt", weights_only=True)["x"].tolist() == [0, 1, 2]


def test_run_info_records_args_versions(tmp_path):
    path = write_run_info(tmp_path, {"seed": 7, "lr": 1e-4}, extra={"data_fingerprint": "abc"})
    info = json.loads(path.read_text())
    assert info["seed"] == 7 and info["args"]["lr"] == 1e-4 and info["data_fingerprint"] == "abc"
    assert "torch" in info["versions"] and "python" in info["versions"]


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    write_json(tmp_path / "x.json", {})
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_fingerprint_meanwhile_is_the_file_fingerprint_and_reraises(tmp_path):
    import threading

    from exmed_bert.io import file_fingerprint, fingerprint_meanwhile

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.parquet").write_bytes(b"x" * 3_000_000)
    (tmp_path / "d" / "b.json").write_text("{}")
    with fingerprint_meanwhile(tmp_path / "d") as result:
        assert result() == file_fingerprint(tmp_path / "d")
    with fingerprint_meanwhile(tmp_path / "missing") as result:
        with pytest.raises(FileNotFoundError):
            result()
    stop = threading.Event()
    stop.set()
    assert file_fingerprint(tmp_path / "d", stop=stop) is None      # leaving the block early stops hashing


def test_start_writeback_keeps_the_data_and_ignores_files_without_a_descriptor(tmp_path):
    import io

    from exmed_bert.io import start_writeback

    with atomic_write(tmp_path / "x.bin", "wb") as f:
        f.write(b"a" * 100_000)
        assert start_writeback(f, 0, 100_000) == 100_000
        f.write(b"b" * 10)
    assert (tmp_path / "x.bin").read_bytes() == b"a" * 100_000 + b"b" * 10
    assert start_writeback(io.BytesIO(b"abc"), 0, 3) == 3


def test_replace_retries_a_target_held_for_a_moment(tmp_path, monkeypatch):
    """Windows refuses to replace a file that is open or memory-mapped; a dropped dataset's mapping goes at
    the next garbage collection, so the write collects and retries instead of failing."""
    import exmed_bert.io as io_mod

    real, calls = os.replace, []

    def held_twice(src, dst):
        calls.append(dst)
        if len(calls) <= 2:
            raise PermissionError(13, "The process cannot access the file because it is being used")
        real(src, dst)

    monkeypatch.setattr(io_mod.os, "replace", held_twice)
    monkeypatch.setattr(io_mod.time, "sleep", lambda s: None)
    io_mod.write_text(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "new" and len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]   # no temp file left behind


def test_replace_of_a_target_held_for_good_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    import exmed_bert.io as io_mod
    from exmed_bert.errors import UserError

    (tmp_path / "a.txt").write_text("old")

    def held(src, dst):
        raise PermissionError(13, "Access is denied")

    monkeypatch.setattr(io_mod.os, "replace", held)
    monkeypatch.setattr(io_mod.time, "sleep", lambda s: None)
    with pytest.raises(UserError, match=r"a\.txt: cannot replace the file \(Access is denied\); another program"):
        io_mod.write_text(tmp_path / "a.txt", "new")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
