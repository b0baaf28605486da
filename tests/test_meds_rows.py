"""MEDS rows that are not plain events: duplicate rows dropped once (the hashed first look and the exact
comparison agree with a plain set of rows), static codes placed in the first visit."""

import datetime as dt
import math
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from exmed_bert.convert.meds_rows import drop_duplicate_rows, duplicate_rows, place_statics


def table(rows):
    return pa.table({"subject_id": pa.array([r[0] for r in rows], pa.int64()),
                     "time": pa.array([r[1] for r in rows], pa.timestamp("us")),
                     "code": pa.array([r[2] for r in rows], pa.string()),
                     "numeric_value": pa.array([r[3] for r in rows], pa.float32())})


def first_of_each(rows):
    """The reference: rows less those equal to an earlier one (NaN equal to NaN, -0.0 to 0.0)."""
    seen, out = set(), []
    for r in rows:
        v = r[3]
        key = (r[0], r[1], r[2], "nan" if v is not None and math.isnan(v) else (None if v is None else v + 0.0))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def test_duplicates_are_dropped_once_in_place_whatever_their_order():
    t0 = dt.datetime(2020, 1, 1)
    rng = random.Random(0)
    codes = ["A", "B", "LAB//x", None]
    rows = [(rng.randint(1, 3), t0 + dt.timedelta(hours=rng.randint(0, 3)) if rng.random() > 0.1 else None,
             rng.choice(codes), rng.choice([None, 1.0, 2.0, -0.0, 0.0, float("nan")])) for _ in range(400)]
    want = first_of_each(rows)
    assert 0 < len(want) < len(rows)   # the draw has duplicates, some far apart
    t = table(rows)
    for candidates in (None, np.arange(len(rows))):   # the hashed first look, or every row a candidate
        drop = duplicate_rows(t, candidates)
        got, n = t.filter(pa.array(~drop)), int(drop.sum())
        assert n == len(rows) - len(want)
        # the first of equal rows, in place (compared as text: NaN != NaN)
        assert [str(r) for r in got.to_pylist()] == [str(r) for r in table(want).to_pylist()]


def test_a_code_at_one_time_with_another_value_is_not_a_duplicate():
    t = dt.datetime(2020, 1, 1, 10)
    rows = [(1, t, "LAB//x", 1.0), (1, t, "LAB//x", 2.0), (1, t, "LAB//y", 1.0), (2, t, "LAB//x", 1.0)]
    got, n = drop_duplicate_rows(table(rows))
    assert n == 0 and got.num_rows == 4


def test_static_facts_go_to_the_first_dated_day_or_are_counted_as_ignored():
    p = {"diagnoses": [{"code": "I10", "date": "2020-02-01"}, {"code": "E11", "date": "2020-01-05"}],
         "prescriptions": [], "procedures": []}
    race = {"code": "Race//4", "date": None, "system": "other"}
    kept, ignored = Counter(), Counter()
    place_statics(p, [("diagnoses", race, "Race")], True, kept, ignored)
    assert race["date"] == "2020-01-05" and race["time"] == int(dt.datetime(2020, 1, 5).timestamp() * 1_000_000)
    assert kept == {"Race": 1} and not ignored
    empty = {"diagnoses": [], "prescriptions": [], "procedures": []}
    place_statics(empty, [("diagnoses", dict(race, date=None), "Race")], False, kept, ignored)
    assert ignored == {"Race (static)": 1} and not empty["diagnoses"]


def test_the_first_look_finds_every_repeat_of_subject_time_and_code_in_a_sorted_table():
    from exmed_bert.convert.meds_rows import repeated_rows, time_key

    rng = random.Random(1)
    t0 = dt.datetime(2020, 1, 1)
    for trial in range(200):
        rows = sorted(((rng.randint(0, 3), t0 + dt.timedelta(hours=rng.randint(0, 4)), rng.randint(0, 5))
                       for _ in range(rng.randint(0, 12))), key=lambda r: (r[0], r[1]))
        pat = np.array([r[0] for r in rows], dtype=np.int64)
        code = np.array([r[2] for r in rows], dtype=np.int64)
        time = time_key(pa.chunked_array([pa.array([r[1] for r in rows], pa.timestamp("us"))]))
        repeats = {r for r in rows if rows.count(r) > 1}
        assert repeated_rows(pat, time, code, 6).tolist() == [i for i, r in enumerate(rows) if r in repeats], rows


def test_dropping_duplicates_imports_no_pandas(tmp_path):
    """pa.array / pa.scalar / to_numpy import pandas (~0.4 s and ~40 MB in every conversion process)."""
    import subprocess
    import sys

    t = dt.datetime(2020, 1, 1)
    pq.write_table(table([(1, t, "A", 1.0), (1, t, "A", 1.0), (1, None, None, None), (2, t, "A", None)]),
                   tmp_path / "0.parquet")
    code = ("import sys\nfrom exmed_bert.convert.arrow import read_parquet\n"
            "from exmed_bert.convert.meds_rows import drop_duplicate_rows\n"
            f"tab = read_parquet({str(tmp_path / '0.parquet')!r})\n"
            "assert 'pandas' not in sys.modules\n"
            "assert drop_duplicate_rows(tab)[1] == 1\n"
            "print('pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
