"""What keeps conversion workers light and quick to start: Arrow arrays built without pyarrow's pandas
check (exmed_bert.convert.arrow), no pandas in a worker's pass, and the fork server started early
(exmed_bert.convert.processes.start_early)."""

import datetime as dt
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exmed_bert.convert import arrow
from test_meds_fastpath import nasty_subjects, write_fixture


@pytest.mark.parametrize("values,type", [
    ([3, -1, 2 ** 40], pa.int64()), ([7, 0], pa.int32()), ([65535, 1], pa.uint16()),
    (["E11.65", "", "ümlaut ✓"], pa.string()), (["a", "bc"], pa.large_string()),
    ([True, False, True] * 5, pa.bool_()), ([], pa.int64()), ([], pa.string()),
    (["a", None], pa.string()),                                          # a null: pyarrow builds it
])
def test_arrays_and_scalars_equal_pyarrows(values, type):
    built = arrow.array(values, type)
    assert built.type == type and built.equals(pa.array(values, type=type))
    if values and values[0] is not None:
        assert arrow.scalar(values[0], type).equals(pa.scalar(values[0], type=type))


def test_numpy_reads_buffers_with_offsets_and_chunks():
    ints = pa.array(np.arange(20, dtype=np.int32)).slice(5, 9)          # a view: offset 5
    bools = pa.array([i % 3 == 0 for i in range(21)]).slice(3, 13)      # offset inside a byte
    floats = pa.array(np.linspace(0, 1, 7)).slice(2)
    days = pa.array([dt.date(2020, 1, 1) + dt.timedelta(d) for d in range(6)], pa.date32()).slice(1, 4)
    chunked = pa.chunked_array([pa.array([1, 2], pa.int64()), pa.array([3], pa.int64()).slice(0, 1), pa.array([4, 5], pa.int64())])
    for a, expected in [(ints, np.arange(5, 14, dtype=np.int32)), (bools, np.array([i % 3 == 0 for i in range(3, 16)])),
                        (floats, np.linspace(0, 1, 7)[2:]), (days, np.arange(18262 + 1, 18262 + 5, dtype=np.int32)),
                        (chunked, np.array([1, 2, 3, 4, 5])), (pa.array([1, None, 3]), None)]:
        got = arrow.numpy(a)
        if expected is None:   # nulls: left to pyarrow
            assert np.isnan(got[1]) and got[0] == 1
            continue
        assert got.dtype == expected.dtype and np.array_equal(got, expected), a


def test_a_workers_pass_over_a_meds_shard_loads_no_pandas(tmp_path):
    root = write_fixture(tmp_path / "meds", nasty_subjects() * 3, shards=2)
    (tmp_path / "spill").mkdir()
    code = textwrap.dedent(f"""
        import pickle, sys
        from pathlib import Path
        import exmed_bert.convert.workers as w
        from exmed_bert.convert.args import ConvertArgs
        from exmed_bert.convert.formats.meds import MedsSource, Shard
        from exmed_bert.convert.intake import Job
        args = ConvertArgs(input={str(root)!r}, other_codes="keep", max_length=64)
        source = MedsSource(Path(args.input), args)
        source.batch_rows = 5
        job = Job(args, source, pretraining=True, labels=None, spill_dir={str(tmp_path / "spill")!r})
        w._start(pickle.loads(pickle.dumps(job)))   # as a worker gets it: the settings, no open reader
        r = w.convert_piece(Shard(file={str(root / "data" / "0.parquet")!r}))
        assert r["n_records"] > 0 and r["pre"]["spilled"]
        print("pandas" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="the fork server is POSIX-only (Windows workers start with spawn)")
def test_fork_server_starts_early_only_when_workers_are_likely(tmp_path):
    root = write_fixture(tmp_path / "meds", nasty_subjects(), shards=3)
    one = tmp_path / "one.parquet"
    one.write_bytes((root / "data" / "0.parquet").read_bytes())
    doc = tmp_path / "p.json"
    doc.write_text('{"patients": []}')
    code = textwrap.dedent(f"""
        from multiprocessing import forkserver
        from exmed_bert.convert.processes import start_early
        running = lambda: forkserver._forkserver._forkserver_pid is not None
        print(start_early({str(root)!r}, 1), start_early({str(root)!r}, None), start_early({str(one)!r}, None),
              start_early({str(doc)!r}, 4), start_early({str(tmp_path / "missing")!r}, 4),
              start_early(None, 4), running())
        print(start_early({str(one)!r}, 2), running(), start_early({str(root)!r}, 2))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    # workers 1, small inputs at the default, a JSON document, a missing path, no input: not started; one
    # shard with --workers (it may be cut into row-group parts): started, and asking again is harmless
    assert out.stdout.split() == ["False"] * 7 + ["True"] * 3, out.stderr


def test_flags_are_peeked_before_parsing_only_when_the_command_line_holds_them():
    from exmed_bert.convert.processes import peek_flags

    assert peek_flags(["--input", "d", "--workers", "3"]) == ("d", 3)
    assert peek_flags(["--output", "o.pt", "--input=d", "--workers=2"]) == ("d", 2)
    assert peek_flags(["--input", "d"]) == ("d", None)
    assert peek_flags(["--input", "d", "--workers", "two"]) == ("d", 1)       # the parser will say why
    assert peek_flags(["--config", "c.yaml", "--input", "d"]) == (None, None)  # the file may set them
    assert peek_flags(["--config=c.yaml"]) == (None, None)
    assert peek_flags(["--input", "d", "--help"]) == (None, None)
    assert peek_flags(["--input"]) == (None, None)


def test_the_command_line_module_is_light_to_import():
    """Every worker imports the main script again (multiprocessing does, for pickled references to it):
    the conversion's command line must not load the config modules, numpy or pyarrow when imported."""
    code = ("import sys, exmed_bert.cli.convert; "
            "print(sorted(m for m in ('numpy', 'pyarrow', 'yaml', 'exmed_bert.config') if m in sys.modules)); "
            "import exmed_bert.config, exmed_bert.convert.args; "   # what parsing the flags loads
            "print(sorted(m for m in ('numpy', 'yaml', 'exmed_bert.training.args') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "[]"], out.stderr


def test_a_script_freezes_what_is_left_before_exiting(monkeypatch):
    """The interpreter's last collection would walk every object a stage left; `run` freezes them first."""
    import gc

    from exmed_bert.errors import run

    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    with pytest.raises(SystemExit) as e:
        run(lambda: calls.append("main") or 3)
    assert e.value.code == 3 and calls == ["main", "freeze"]


def test_malloc_tuning_sets_glibc_options_on_linux_only(monkeypatch):
    from exmed_bert.convert import processes

    calls = []

    class Libc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

    monkeypatch.setattr(processes.ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setattr(processes.sys, "platform", "linux")
    processes.tune_malloc()
    assert calls == [(-2, 64 << 20), (-3, 32 << 20), (-8, 1)]   # M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX
    calls.clear()
    for platform in ("win32", "darwin"):
        monkeypatch.setattr(processes.sys, "platform", platform)
        processes.tune_malloc()
    assert calls == []

    def missing(name):
        raise OSError(name)

    monkeypatch.setattr(processes.sys, "platform", "linux")
    monkeypatch.setattr(processes.ctypes, "CDLL", missing)   # musl or another libc: nothing to tune
    processes.tune_malloc()


def test_meds_labels_and_subject_splits_are_read_without_pandas(tmp_path):
    """pq.read_table imports pyarrow.dataset, which imports pandas (0.2 s, ~70 MB of the main process's
    peak): label files, subject splits and unsorted shards are read with arrow.read_parquet instead."""
    root = write_fixture(tmp_path / "meds", nasty_subjects(), shards=1)
    (root / "metadata").mkdir()
    pq.write_table(pa.table({"subject_id": pa.array([1000, 1001], pa.int64()), "split": ["train", "held_out"]}),
                   root / "metadata" / "subject_splits.parquet")
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"subject_id": pa.array([1000], pa.int64()),
                             "prediction_time": pa.array([0], pa.timestamp("us")), "boolean_value": [True]}), labels)
    code = textwrap.dedent(f"""
        import sys
        from exmed_bert.convert.labels import read_task_csv
        from exmed_bert.convert.meds import MedsReader
        assert read_task_csv({str(labels)!r}).labels() == {{"1000@0": 1}}
        assert MedsReader({str(root)!r}).subject_splits == {{"1000": "train", "1001": "held_out"}}
        print("pandas" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_the_conversions_public_names_load_on_first_use():
    """`exmed_bert.convert` names what other stages use; importing it (as the config does, for ConvertArgs)
    loads none of the conversion's numpy and pyarrow until one of those names is used."""
    code = ("import sys, exmed_bert.convert as c; from exmed_bert.convert import ConvertArgs; "
            "print('numpy' in sys.modules, 'pyarrow' in sys.modules); "
            "print(all(callable(getattr(c, n)) for n in c.__all__), 'pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True", "True"], out.stderr
    import exmed_bert.convert as c
    with pytest.raises(AttributeError, match="no attribute 'conversion_internals'"):
        c.conversion_internals
