"""MEDS column names, current and older. Files written before MEDS 0.3.2 (August 2024) call subject_id
`patient_id`, and before 0.3.0 time `timestamp`. They are read as they are: a file's columns are asked for
under its own names (`as_file`) and renamed to the current ones as they are read (`current`), so
everything after the read sees only the current names."""

from __future__ import annotations

from typing import Iterable

import pyarrow as pa

OLDER = {"subject_id": "patient_id", "time": "timestamp"}   # current name -> the older one


def older_in(names: Iterable[str]) -> dict[str, str]:
    """{current name: older name} for each current name a file has only under its older name."""
    names = set(names)
    return {new: old for new, old in OLDER.items() if new not in names and old in names}


def as_file(columns: Iterable[str], names: Iterable[str]) -> list[str]:
    """`columns` (current names) as a file whose columns are `names` calls them."""
    m = older_in(names)
    return [m.get(c, c) for c in columns]


def current(data):
    """A Table, RecordBatch or Schema with older column names renamed to the current ones (the same
    object when it has none)."""
    names = list(data.names if isinstance(data, pa.Schema) else data.schema.names)
    back = {old: new for new, old in older_in(names).items()}
    if not back:
        return data
    renamed = [back.get(n, n) for n in names]
    if isinstance(data, pa.Schema):
        return pa.schema([f.with_name(n) for f, n in zip(data, renamed)], metadata=data.metadata)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(data.columns, names=renamed)
    return data.rename_columns(renamed)
