"""Token arrays of a conversion wait on disk (exmed_bert.convert.spill), and leave nothing behind."""

import os
import subprocess
import sys

import numpy as np
import pytest

from exmed_bert.convert.spill import Spill, spill_folder


def test_spill_round_trip_by_split_and_key(tmp_path):
    s = Spill(tmp_path, "pretrain")
    s.append(0, "input_ids", np.array([5, 6], dtype=np.int32))
    s.append(1, "input_ids", np.array([9], dtype=np.int32))
    s.append(0, "input_ids", np.array([7], dtype=np.int32))
    s.append(0, "age_ids", np.array([30, 31, 32], dtype=np.int16))
    np.testing.assert_array_equal(s.take(0, "input_ids"), [5, 6, 7])
    assert s.take(0, "age_ids").dtype == np.int16
    assert s.take(2, "input_ids").size == 0          # a split that got no chunk
    with pytest.raises(TypeError):
        s.append(1, "input_ids", np.array([1], dtype=np.int64))
    s.close()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith("pretrain_1_input_ids")  # taken files are deleted


def test_adopted_worker_files_keep_input_order_and_map_their_ids(tmp_path):
    """A worker's spill files join the main spill in merge order, between the main process's own appends,
    and their input ids go through the worker's id map only when read; nothing is copied when adopting."""
    main, worker = Spill(tmp_path, "pretrain"), Spill(tmp_path, "w1-1-pre")
    main.append(0, "input_ids", np.array([5, 6], dtype=np.int32))
    main.append(0, "days", np.array([100, 101], dtype=np.int32))
    worker.append(0, "input_ids", np.array([0, 1, 1], dtype=np.int32))
    worker.append(0, "days", np.array([7, 8, 9], dtype=np.int32))
    exported = worker.export()
    def worker_files():
        return {p.name: p.read_bytes() for p in tmp_path.glob("w1-*")}

    before = worker_files()
    main.adopt(exported, lut=np.array([40, 41], dtype=np.int32))
    assert worker_files() == before and len(before) == 2                        # adopted as they are
    main.append(0, "input_ids", np.array([7], dtype=np.int32))                   # after the adopted piece
    main.append(0, "days", np.array([102], dtype=np.int32))
    ids = main.chunks(0, "input_ids", np.int32, step=2)
    assert ids.length == 6
    np.testing.assert_array_equal(np.concatenate(list(ids.chunks())), [5, 6, 40, 41, 41, 7])
    np.testing.assert_array_equal(main.take(0, "days"), [100, 101, 7, 8, 9, 102])  # other keys: no map
    assert list(tmp_path.iterdir()) == []                                        # every file read is deleted
    with pytest.raises(TypeError):
        main.adopt({(0, "days"): ("<i8", [])})


def test_discarded_results_leave_no_files(tmp_path):
    from exmed_bert.convert.spill import discard_exported

    w = Spill(tmp_path, "w")
    w.append(1, "input_ids", np.array([1, 2], dtype=np.int32))
    discard_exported(w.export())
    w2 = Spill(tmp_path, "w2")
    w2.append(0, "age_ids", np.array([3], dtype=np.int16))
    w2.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="stale folders are recognised by a POSIX process probe")
def test_spill_folder_removes_folders_of_dead_conversions(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".converting-{int(dead.stdout)}-abc.tmp"
    live = tmp_path / f".converting-{os.getpid()}-def.tmp"
    for d in (stale, live):
        d.mkdir()
        (d / "pretrain_0_input_ids.bin").write_bytes(b"\0" * 8)
    with spill_folder(tmp_path) as tmp:
        assert os.path.isdir(tmp) and os.path.basename(tmp).startswith(f".converting-{os.getpid()}-")
    assert not stale.exists() and live.exists() and not os.path.exists(tmp)


def test_conversion_leaves_no_spill_folder(tiny_cohort, tmp_path):
    from exmed_bert.convert.conversion import convert_patients

    out = tmp_path / "ds"
    convert_patients(tiny_cohort["patients"], out / "synthetic.pt", progress=False)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    from exmed_bert.errors import UserError

    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, _):
            raise OSError(28, "No space left on device")

        def close(self):
            self.f.close()

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Full(real_open(*a, **k)))
    s = Spill(tmp_path, "pretrain")
    with pytest.raises(UserError, match="No space left on device.*free disk space"):
        s.append(0, "input_ids", np.array([1], dtype=np.int32))
    monkeypatch.undo()
    s.close()


def test_a_lut_given_when_reading_is_composed_with_each_segments_own(tmp_path):
    """The writer's map (provisional -> vocabulary ids) is applied after a worker segment's map and alone
    on the main process's own segments; other keys are never mapped."""
    main, worker = Spill(tmp_path, "pretrain"), Spill(tmp_path, "w1-1-pre")
    main.append(0, "input_ids", np.array([5, 6], dtype=np.int32))
    worker.append(0, "input_ids", np.array([0, 1, 1], dtype=np.int32))
    main.adopt(worker.export(), lut=np.array([6, 7], dtype=np.int32))   # worker 0 -> 6, 1 -> 7
    main.append(0, "input_ids", np.array([7], dtype=np.int32))
    final = np.array([0, 1, 2, 3, 4, 50, 60, 70], dtype=np.int32)
    ids = main.chunks(0, "input_ids", np.int32, step=2, lut=final)
    np.testing.assert_array_equal(np.concatenate(list(ids.chunks())), [50, 60, 60, 70, 70, 70])
    assert list(tmp_path.iterdir()) == []
