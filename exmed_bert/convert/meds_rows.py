"""Rows of a MEDS shard that are not plain events: duplicate rows (identical in every column read), dropped once
and counted, and static codes (a null time: race, eye colour, a height), placed in the subject's first visit."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exmed_bert.convert import arrow
from exmed_bert.convert.meds_codes import EVENT_KINDS

_MIX = np.uint64(0x9E3779B97F4A7C15)   # odd 64-bit constants of splitmix64: each key spreads over all bits
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)


def row_key(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """int64 keys of a column that are equal exactly where the values are (nulls equal each other)."""
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t):
        col = pc.cast(col.cast(pa.int32()) if pa.types.is_date32(t) else col, pa.int64())
        null = arrow.numpy(col.is_null()) if col.null_count else None
        out = arrow.numpy(col.fill_null(arrow.scalar(0, pa.int64()))).astype(np.int64)
        return out if null is None else np.where(null, np.iinfo(np.int64).min, out)
    if pa.types.is_floating(t):
        col = col.cast(pa.float64())
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if not len(col):
            return np.zeros(0, dtype=np.int64)
        # the values buffer as it is (what lies under a null is replaced below): no pandas-importing to_numpy
        v = np.frombuffer(col.buffers()[1], dtype=np.float64, count=len(col) + col.offset)[col.offset:]
        v = np.where(np.isnan(v), np.nan, v + 0.0).view(np.int64)   # one NaN, and -0.0 == 0.0
        if col.null_count:   # a null is no value, not a NaN one: a NaN bit pattern that the line above never makes
            v = np.where(arrow.numpy(col.is_null()), np.int64(0x7FF0000000000001), v)
        return v
    enc = pc.dictionary_encode(col)   # text and anything else: equal values, equal ids
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    idx = enc.indices
    return arrow.numpy(idx.fill_null(arrow.scalar(-1, idx.type)) if idx.null_count else idx).astype(np.int64)


def _mixed(keys: list[np.ndarray]) -> np.ndarray:
    """One uint64 per row from its keys (wrapping arithmetic): equal rows give equal values; unequal ones
    rarely do, and a collision only costs an exact comparison."""
    h = keys[0].view(np.uint64) * _MIX
    for k in keys[1:]:
        h = (h ^ (h >> np.uint64(29))) + k.view(np.uint64) * _MIX2
    return h


def time_key(time: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A cheap int64 key of a time column for the first look: equal times give equal keys; a null time is
    0 (equal to 1970-01-01T00:00 here, which only costs an exact comparison)."""
    t = time.type
    col = pc.cast(time.cast(pa.int32()) if pa.types.is_date32(t) else time, pa.int64())
    return arrow.numpy(col.fill_null(arrow.scalar(0, pa.int64())) if col.null_count else col).astype(np.int64, copy=False)


def repeated_rows(pat: np.ndarray, time: np.ndarray, code: np.ndarray, n_codes: int) -> np.ndarray:
    """Rows (ascending) of a table sorted by subject then time that share subject (`pat`), time (`time_key`)
    and code (`code` ids below `n_codes`) with another row: the only rows that can be duplicates, found
    exactly and cheaply from the arrays a block has anyway (usually none)."""
    if len(pat) < 2:
        return np.zeros(0, dtype=np.int64)
    run = np.zeros(len(pat), dtype=np.int64)   # (subject, time) run of each row
    np.cumsum((pat[1:] != pat[:-1]) | (time[1:] != time[:-1]), out=run[1:])
    key = run * (n_codes + 1) + code
    if int(key[-1]) < 2 ** 31 - n_codes - 1:   # runs ascend, so the last row's run is the largest
        key = key.astype(np.int32)             # (an int32 sort takes half the time)
    s = np.sort(key)
    repeats = s[1:][s[1:] == s[:-1]]
    return np.flatnonzero(np.isin(key, repeats)) if len(repeats) else np.zeros(0, dtype=np.int64)


def duplicate_rows(table: pa.Table, candidates: np.ndarray | None = None) -> np.ndarray | None:
    """A mask of the rows of `table` identical to an earlier one in every column (subject_id, time, code
    and, when read, numeric_value and end), or None when there are none. Only `candidates` (rows that may
    be duplicates, ascending; by default those whose hash of subject, time and code repeats) are compared
    exactly."""
    if table.num_rows < 2:
        return None
    if candidates is None:
        h = _mixed([row_key(table["subject_id"]), time_key(table["time"]), row_key(table["code"])])
        s = np.sort(h)
        repeats = s[1:][s[1:] == s[:-1]]
        candidates = np.flatnonzero(np.isin(h, repeats)) if len(repeats) else np.zeros(0, dtype=np.int64)
    if len(candidates) < 2:
        return None
    some = table.take(arrow.array(candidates, pa.int64()))   # (pa.array of numpy would import pandas)
    keys = [row_key(some[c]) for c in some.column_names]
    order = np.lexsort(keys[::-1])   # stable: the first of equal rows comes first
    same = np.ones(len(order) - 1, dtype=bool)
    for k in keys:
        ks = k[order]
        same &= ks[1:] == ks[:-1]
    if not same.any():
        return None
    drop = np.zeros(table.num_rows, dtype=bool)
    drop[candidates[order[1:][same]]] = True
    return drop


def drop_duplicate_rows(table: pa.Table) -> tuple[pa.Table, int]:
    """`table` without rows identical to an earlier one in every column, the first kept in place, and how
    many were dropped (`duplicate_rows`)."""
    drop = duplicate_rows(table)
    if drop is None:
        return table, 0
    return table.filter(arrow.array(~drop, pa.bool_())), int(drop.sum())


def holds_values(file: pq.ParquetFile, column: str) -> bool:
    """Whether `column` of `file` may hold a non-null value: False only when the statistics of every row
    group count all its rows null (a root of codes without values), so the column need not be read to tell
    duplicate rows apart."""
    md = file.metadata
    j = next((j for j in range(md.num_columns) if md.schema.column(j).path == column), None)
    if j is None:
        return False
    for i in range(md.num_row_groups):
        group = md.row_group(i)
        stats = group.column(j).statistics
        if stats is None or not stats.has_null_count or stats.null_count < group.num_rows:
            return True
    return False


def place_statics(p: dict, statics: list, timed: bool, kept: Counter, ignored: Counter) -> None:
    """Static facts ((event list, event, family) of null-time code rows) as events of the subject's first
    dated day (at its midnight, for a prediction-time cut: in the task input of any prediction time from
    that day on), counted in `kept`; a subject with no dated event has nowhere to put them: counted in
    `ignored` as "<family> (static)"."""
    days = [e["date"] for k in EVENT_KINDS for e in p[k] if e["date"] is not None]
    if not days:
        for _, _, family in statics:
            ignored[f"{family} (static)"] += 1
        return
    first = min(days)
    for kind, e, family in statics:
        e["date"] = first
        if timed:
            e["time"] = int(np.datetime64(first, "us").astype(np.int64))
        p[kind].append(e)
        kept[family] += 1
