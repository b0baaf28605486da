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
        v = arrow.numpy(col.fill_null(np.nan)).astype(np.float64)
        v = np.where(np.isnan(v), np.nan, v + 0.0).view(np.int64)   # one NaN, and -0.0 == 0.0
        if col.null_count:   # a null is no value, not a NaN one: a NaN bit pattern that the line above never makes
            v = np.where(arrow.numpy(col.is_null()), np.int64(0x7FF0000000000001), v)
        return v
    enc = pc.dictionary_encode(col)   # text and anything else: equal values, equal ids
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    return arrow.numpy(enc.indices.fill_null(-1)).astype(np.int64)


def _mixed(keys: list[np.ndarray]) -> np.ndarray:
    """One uint64 per row from its keys (wrapping arithmetic): equal rows give equal values; unequal ones
    rarely do, and a collision only costs an exact comparison."""
    h = keys[0].view(np.uint64) * _MIX
    for k in keys[1:]:
        h = (h ^ (h >> np.uint64(29))) + k.view(np.uint64) * _MIX2
    return h


def _quick_key(col: pa.ChunkedArray | pa.Array, code_set: pa.Array | None) -> np.ndarray:
    """A cheap int64 key for the first look: equal values give equal keys (nulls all -1 or the int64 minimum)."""
    if code_set is not None:   # a code: its position among the shard's used codes (a hash lookup)
        return arrow.numpy(pc.index_in(col, value_set=code_set).fill_null(-1)).astype(np.int64, copy=False)
    if not col.null_count and (pa.types.is_integer(col.type) or pa.types.is_timestamp(col.type)):
        return arrow.numpy(pc.cast(col, pa.int64())).astype(np.int64, copy=False)
    return row_key(col)


def drop_duplicate_rows(table: pa.Table, code_set: pa.Array | None = None) -> tuple[pa.Table, int]:
    """`table` without rows identical to an earlier one in every column (subject_id, time, code and, when
    read, numeric_value and end), the first kept in place; and how many were dropped.

    A first look hashes each row's subject_id, time and code to one uint64 and sorts those once; only rows
    whose hash repeats (true duplicates, a code repeated at one time with another value, or a rare
    collision: almost always none) are compared exactly, in every column. `code_set`: distinct code
    strings holding every code of `table` (the shard's used codes), so a code's key is its position there
    rather than a dictionary built per table."""
    if table.num_rows < 2:
        return table, 0
    h = _mixed([_quick_key(table[c], code_set if c == "code" else None) for c in ("subject_id", "time", "code")])
    s = np.sort(h)
    repeats = s[1:][s[1:] == s[:-1]]
    if not len(repeats):
        return table, 0
    rows = np.flatnonzero(np.isin(h, repeats))   # the candidates, in table order
    some = table.take(pa.array(rows))
    keys = [row_key(some[c]) for c in some.column_names]
    order = np.lexsort(keys[::-1])   # stable: the first of equal rows comes first
    same = np.ones(len(order) - 1, dtype=bool)
    for k in keys:
        ks = k[order]
        same &= ks[1:] == ks[:-1]
    if not same.any():
        return table, 0
    drop = np.zeros(table.num_rows, dtype=bool)
    drop[rows[order[1:][same]]] = True
    return table.filter(pa.array(~drop)), int(drop.sum())


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
