"""Columnar fast path for MEDS input: one streamed piece of a shard (the used rows of some subjects) becomes
arrays of events, birth days, sex and stays without a Python dict per patient or per event.

Codes are read once per distinct string (`MedsReader._parse`), days come from Arrow's date cast. Any
subject that is not plainly valid (a malformed code, a missing date, a birth after an event, a stay
that is open, reversed or over the cap, a value to bin...) is flagged `slow`: `Intake.block` sends it
through `MedsReader._patient` and the per-record `RecordParser`, the reference, so outputs, counts and
rejects are those of the per-record path. The interface is `FastBlock`'s (exmed_bert.convert.fastpath).
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exmed_bert.convert import arrow
from exmed_bert.convert.columns import NO_TIME
from exmed_bert.convert.meds_codes import EVENT_KINDS
from exmed_bert.convert.meds_rows import duplicate_rows, repeated_rows, time_key
from exmed_bert.convert.validate import _SEX, MAX_OTHER_CODE_LENGTH, STAY_CAP_DAYS, RecordParser
from exmed_bert.data.layout import EPOCH_ORDINAL, UNKNOWN_BIRTH

# kinds of a distinct code (MedsCode.kind), as small ints
_EVENT, _OTHER, _BIRTH, _SEX_ROW, _ADMISSION, _DISCHARGE, _VISIT, _IGNORED = range(8)
_KIND = {**{k: _EVENT for k in EVENT_KINDS}, "other": _OTHER, "birth": _BIRTH, "sex": _SEX_ROW,
         "admission": _ADMISSION, "discharge": _DISCHARGE, "visit": _VISIT}
_BAD = -1                    # a code whose event the per-record path would reject (or drop and count)
_MIN_DAY = _dt.date(1, 1, 1).toordinal() - EPOCH_ORDINAL      # the days a 'YYYY-MM-DD' string can hold
_MAX_DAY = _dt.date(9999, 12, 31).toordinal() - EPOCH_ORDINAL


def _days(time: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(days since 1970 [R] int64, null [R] bool, out of range [R] bool: outside years 1-9999, which no
    'YYYY-MM-DD' string holds) of a MEDS time column; the UTC date of a timezone-aware time (as
    `meds.iso_dates`)."""
    t = time.type
    if pa.types.is_null(t):
        none = np.zeros(len(time), dtype=bool)
        return np.zeros(len(time), dtype=np.int64), ~none, none
    if pa.types.is_timestamp(t) and t.tz is not None:
        time = time.cast(pa.timestamp(t.unit))
    d = time.cast(pa.date32()).cast(pa.int32())
    null = arrow.numpy(d.is_null()) if d.null_count else np.zeros(len(d), dtype=bool)
    days = arrow.numpy(d.fill_null(arrow.scalar(0, pa.int32()))).astype(np.int64)
    return days, null, ~null & ((days < _MIN_DAY) | (days > _MAX_DAY))


def event_times_us(time: pa.ChunkedArray) -> np.ndarray:
    """Microseconds since 1970 (int64) of a MEDS time column, NO_TIME where unknown: a null, a date
    column (no time of day), a null-typed column. Timezone-aware times as UTC, like `iso_dates`; naive
    ones as written (a label's prediction_time is read the same way, so the two compare)."""
    t = time.type
    if not pa.types.is_timestamp(t):
        return np.full(len(time), NO_TIME, dtype=np.int64)
    if t.tz is not None:
        time = time.cast(pa.timestamp(t.unit))
    us = pc.cast(time, pa.timestamp("us"), safe=False).cast(pa.int64())
    return arrow.numpy(us.fill_null(arrow.scalar(NO_TIME, pa.int64()))).astype(np.int64)


def _last_per_run(pat: np.ndarray) -> np.ndarray:
    """Positions of the last element of each run of equal values in `pat` (non-decreasing)."""
    return np.flatnonzero(np.r_[pat[1:] != pat[:-1], True]) if len(pat) else pat


def _subjects_and_codes(table: pa.Table, subjects: list) -> tuple[np.ndarray, pa.DictionaryArray, np.ndarray]:
    """Each row's patient (its position in `subjects`), the codes dictionary-encoded, each row's code id."""
    ids = table["subject_id"]
    pat = arrow.numpy(pc.index_in(ids, value_set=arrow.array(subjects, ids.type))).astype(np.int64)
    enc = pc.dictionary_encode(table["code"]).combine_chunks()
    return pat, enc, arrow.numpy(enc.indices).astype(np.int64)


class MedsBlock:
    """Patients `subjects` (ascending) of one piece of a MEDS shard, from `table`: their used rows only,
    sorted by subject_id then time. n patients, E events (patient-major), S stays (see FastBlock). Rows
    identical to an earlier one are dropped first and counted in `reader.duplicates`, as
    `MedsReader._patients` does on the per-record path."""

    def __init__(self, reader, table: pa.Table, subjects: list, has_end: bool, parser: RecordParser):
        n = self.n = len(subjects)
        self._reader, self._table, self._subjects, self._has_end = reader, table, subjects, has_end
        self.slow = slow = np.zeros(n, dtype=bool)
        self.pids = [str(s) for s in subjects]
        if pa.types.is_string(table.schema.field("subject_id").type) or pa.types.is_large_string(
                table.schema.field("subject_id").type):
            slow |= np.array([s == "" for s in subjects], dtype=bool)   # "missing patient_id"
        pat, enc, idx = _subjects_and_codes(table, subjects)
        maybe = repeated_rows(pat, time_key(table["time"]), idx, len(enc.dictionary))
        drop = duplicate_rows(table, maybe) if len(maybe) else None   # rare: those rows compared exactly
        if drop is not None:   # every dropped row's code stays in its twin, so `enc` still holds them all
            keep = ~drop
            table = self._table = table.filter(arrow.array(keep, pa.bool_()))
            pat, idx = pat[keep], idx[keep]
            reader.duplicates += int(drop.sum())
        self._starts = np.searchsorted(pat, np.arange(n + 1))   # rows of patient i: starts[i]:starts[i+1]

        # each distinct code once: its kind, family, token (events) and sex
        distinct = enc.dictionary.to_pylist()
        edges = reader.value_edges
        kinds, toks, sexes, families = [], [], [], []
        for code in distinct:
            m = reader._parse(code)
            kind = _KIND.get(m.kind, _IGNORED)
            tok = _BAD
            if kind == _EVENT and parser.code_ok(m.system, m.value):
                tok = parser.token(m.system, m.value)
            elif kind == _OTHER and len(m.value) <= MAX_OTHER_CODE_LENGTH and code not in edges:
                tok = parser.other_token(m.value)
            kinds.append(kind)
            toks.append(tok)
            sexes.append(_SEX[m.code.lower()] if kind == _SEX_ROW and m.code is not None else 0)
            families.append(m.family)
        kind = np.array(kinds or [_IGNORED], dtype=np.int8)[idx]
        tok = np.array(toks or [_BAD], dtype=np.int64)[idx]
        day, null_day, range_day = _days(table["time"])
        bad_day = null_day | range_day

        ev = (kind == _EVENT) | (kind == _OTHER)
        slow[pat[ev & (bad_day | (tok < 0))]] = True
        slow[pat[kind == _IGNORED]] = True    # not a used code (cannot happen: the reader filters them)
        self.ev_pat, self.ev_day, self._ev_tok = pat[ev], day[ev].astype(np.int32), tok[ev].astype(np.int32)
        if reader.event_times:   # a prediction-time cut: each event's time (NO_TIME unknown)
            self.ev_time = event_times_us(table["time"])[ev]
        slow |= np.bincount(self.ev_pat, minlength=n) == 0                       # no events: a reject

        self.birth = np.full(n, UNKNOWN_BIRTH, dtype=np.int32)
        rows = np.flatnonzero(kind == _BIRTH)
        if len(rows):   # the last birth row of a patient wins, as in MedsReader._patient
            last = rows[_last_per_run(pat[rows])]
            slow[pat[last[range_day[last]]]] = True   # a null time is an unknown birth date, as in JSON
            self.birth[pat[last]] = np.where(bad_day[last], UNKNOWN_BIRTH, day[last])
        if len(self.ev_pat):
            first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first, self.ev_pat, self.ev_day.astype(np.int64))
            slow |= (self.birth != UNKNOWN_BIRTH) & (first < self.birth)
        self.sex = np.zeros(n, dtype=np.int8)
        rows = np.flatnonzero(kind == _SEX_ROW)
        if len(rows):
            last = rows[_last_per_run(pat[rows])]
            self.sex[pat[last]] = np.array(sexes, dtype=np.int8)[idx[last]]

        self._stays(pat, kind, idx, day, bad_day, families)
        # rows counted per family for the patients that stay on this path (the slow ones are counted by
        # MedsReader._patient when Intake.block reads them)
        fast_row = ~slow[pat]
        kept = np.bincount(idx[fast_row & (kind < _ADMISSION)], minlength=len(distinct))
        for i in np.flatnonzero(kept).tolist():
            reader.kept[families[i]] += int(kept[i])
        for p, name, is_kept in self._stay_counts:
            if not slow[p]:
                (reader.kept if is_kept else reader.ignored)[name] += 1

    def _stays(self, pat, kind, idx, day, bad_day, families) -> None:
        """Admission/discharge pairs (first open admission first) and OMOP inpatient visits, in row order,
        as MedsReader._patient pairs them; patients with a stay the per-record path would reject, or
        leave out as implausible, are flagged slow."""
        rows = np.flatnonzero((kind >= _ADMISSION) & (kind <= _VISIT))
        self._stay_counts: list[tuple[int, str, bool]] = []   # (patient, family, kept) per stay row
        los_pat, los_a, los_d = [], [], []
        if len(rows):
            if self._has_end:
                end, end_null, end_range = _days(self._table["end"])
            else:
                end, end_null, end_range = (np.zeros(len(kind), np.int64), np.ones(len(kind), bool),
                                            np.zeros(len(kind), bool))
            unusable = -(1 << 40)   # a day the per-record path rejects in a stay (missing or out of range)
            kinds, pats, codes = kind[rows].tolist(), pat[rows].tolist(), idx[rows].tolist()
            days = np.where(bad_day[rows], unusable, day[rows]).tolist()
            ends = np.where(end_range[rows], unusable, end[rows]).tolist()
            no_end = end_null[rows].tolist()
            counts, current, open_ = self._stay_counts, -1, []
            for k, p, c, d, e, none in zip(kinds, pats, codes, days, ends, no_end):
                if p != current:
                    current, open_ = p, []
                family = families[c]
                if k == _ADMISSION:
                    open_.append(d)
                    counts.append((p, family, True))
                    continue
                if k == _DISCHARGE:
                    if not open_:
                        counts.append((p, family, False))
                        continue
                    a = open_.pop(0)
                elif none:   # an OMOP visit without an end is no stay
                    counts.append((p, f"{family} (no end)", False))
                    continue
                else:
                    a, d = d, e
                counts.append((p, family, True))
                los_pat.append(p)
                los_a.append(a)
                los_d.append(d)
            a = np.array(los_a, dtype=np.int64)
            d = np.array(los_d, dtype=np.int64)
            pat_ = np.array(los_pat, dtype=np.int64)
            bad = (a == unusable) | (d == unusable) | (d < a) | ((d - a) > STAY_CAP_DAYS)
            b = self.birth[pat_].astype(np.int64)
            bad |= (b != UNKNOWN_BIRTH) & (a < b)
            self.slow[pat_[bad]] = True
            ok = ~bad
            self.los_pat = pat_[ok]
            self.los_days = (d - a)[ok].astype(np.int16)
            self.los_start = a[ok].astype(np.int32)
        else:
            self.los_pat, self.los_days, self.los_start = (np.zeros(0, np.int64), np.zeros(0, np.int16),
                                                           np.zeros(0, np.int32))

    # -- the FastBlock interface used by Intake.block ---------------------------------------------
    def new_tokens(self) -> list:
        """Tokens were created when the block was read (their order does not change any output)."""
        return []

    def event_tokens(self, parser: RecordParser) -> np.ndarray:
        return self._ev_tok

    def record(self, i: int) -> dict:
        """Patient i as the per-record path reads it (MedsReader._patient), for a flagged patient."""
        lo, hi = int(self._starts[i]), int(self._starts[i + 1])
        return self._reader._patient_rows(self._subjects[i], self._table.slice(lo, hi - lo), self._has_end)
