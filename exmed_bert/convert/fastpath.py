"""Columnar fast path for JSONL blocks: pyarrow parses a block of lines, and codes, dates and sex values
are checked once per distinct value. Any record that is not plainly valid is flagged `slow` and goes
through the per-record `RecordParser` (the reference), so outputs and rejects stay identical.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from exmed_bert.convert.validate import CATEGORIES, _SEX, STAY_CAP_DAYS, RecordParser
from exmed_bert.data.layout import UNKNOWN_BIRTH

_BAD, _NEW = -1, -2   # per distinct code: invalid, valid but not yet a token
_MIN_DAY = -719162    # 0001-01-01 in days since 1970 (Python dates start there)


def _schema(system: bool = True):
    """Arrow schema of a record. Without `system`, events are exactly {code, date}: about 1.7x cheaper to
    parse, so it is tried first (and refuses any other key, so nothing is silently dropped)."""
    ev = pa.list_(pa.struct([("code", pa.string()), ("date", pa.string())]
                            + ([("system", pa.string())] if system else [])))
    stay = pa.list_(pa.struct([("admission_date", pa.string()), ("discharge_date", pa.string())]))
    return {"patient_id": pa.string(), "birth_date": pa.string(), "sex": pa.string(), "diagnoses": ev, "prescriptions": ev,
            "procedures": ev, "hospitalizations": stay}


def _distinct(arr):
    """(indices int64 [len], distinct values list) of a string array; nulls get index 0 (check nulls apart)."""
    enc = pc.dictionary_encode(arr)
    idx = enc.indices.fill_null(0) if enc.indices.null_count else enc.indices
    return idx.to_numpy().astype(np.int64), enc.dictionary.to_pylist()


def _null_mask(arr) -> np.ndarray:
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return arr.is_null().to_numpy(zero_copy_only=False)


class FastBlock:
    """Per-record and per-event arrays of one parsed block (n records, E events, S stays).

    slow [n] bool: the record must take the per-record path. Event arrays are category-major:
    ev_pat [E] record index, ev_day [E]; codes per category as (indices, distinct codes, state [U]);
    stays los_pat, los_days, los_start [S] (record index, length in days, admission day).
    """

    def __init__(self, table, parser: RecordParser):
        n = self.n = table.num_rows
        slow = self.slow = np.zeros(n, dtype=bool)
        cols = {name: table.column(name).combine_chunks() if name in table.column_names else None
                for name in ("patient_id", *_schema())}
        pid = cols["patient_id"]
        if pid is None or not (pa.types.is_string(pid.type) or pa.types.is_int64(pid.type)):
            raise ValueError("patient_id neither text nor integer")
        raw = pid.to_pylist()
        slow |= _null_mask(pid)
        if pa.types.is_string(pid.type):
            slow |= np.array([x == "" for x in raw], dtype=bool)
            self.pids = raw
        else:
            self.pids = [None if x is None else str(x) for x in raw]

        self.sex = np.zeros(n, dtype=np.int8)
        if cols["sex"] is not None and cols["sex"].null_count < n:
            idx, values = _distinct(cols["sex"])
            table_ = np.array([_SEX.get(v.strip().lower(), -1) for v in values] or [0], dtype=np.int8)
            sex = np.where(_null_mask(cols["sex"]), 0, table_[idx])
            slow |= sex < 0
            self.sex = np.maximum(sex, 0).astype(np.int8)
        self.birth = np.full(n, UNKNOWN_BIRTH, dtype=np.int32)
        if cols["birth_date"] is not None:
            days, bad = self._days(cols["birth_date"], parser)
            known = ~_null_mask(cols["birth_date"])
            slow |= known & bad
            self.birth = np.where(known & ~bad, days, UNKNOWN_BIRTH).astype(np.int32)

        pats, dates, bads, self.codes = [], [], [], []
        for c, (category, system) in enumerate(CATEGORIES):
            col = cols[category]
            if col is None or len(col.flatten()) == 0:
                self.codes.append(None)
                continue
            values, pat = col.flatten(), pc.list_parent_indices(col).to_numpy().astype(np.int64)
            code, date, *sysf = values.flatten()  # children, with the struct's offset and nulls applied
            bad = _null_mask(values) | _null_mask(code)
            if sysf:  # an explicit system: the per-record path handles it
                bad |= ~_null_mask(sysf[0])
            idx, distinct = _distinct(code)
            by_raw = parser._by_raw
            state = np.array([by_raw.get((system, v), _NEW if parser.code_ok(system, v) else _BAD)
                              for v in distinct] or [_BAD], dtype=np.int64)
            bads.append(bad | (state[idx] == _BAD))
            pats.append(pat)
            dates.append(date)
            self.codes.append((c, system, idx, distinct, state, pat))
        self.ev_pat = np.concatenate(pats) if pats else np.zeros(0, np.int64)
        if dates:  # the three categories share most dates: parse their distinct strings together
            days, bad_day = self._days(pa.concat_arrays(dates), parser)
            slow[self.ev_pat[np.concatenate(bads) | bad_day]] = True
            self.ev_day = days.astype(np.int32)
            day_parts = np.split(self.ev_day, np.cumsum([len(p) for p in pats])[:-1])
        else:
            self.ev_day, day_parts = np.zeros(0, np.int32), []
        first = np.full(n, np.iinfo(np.int32).max, dtype=np.int64)  # earliest event day per record
        for pat, days in zip(pats, day_parts):  # each category's events are record-major
            starts = np.flatnonzero(np.r_[True, pat[1:] != pat[:-1]]) if len(pat) else pat
            if len(starts):
                first[pat[starts]] = np.minimum(first[pat[starts]], np.minimum.reduceat(days, starts))
        slow |= np.bincount(self.ev_pat, minlength=n) == 0                      # no events: a reject
        slow |= (self.birth != UNKNOWN_BIRTH) & (first < self.birth)

        self.los_pat, self.los_days = np.zeros(0, np.int64), np.zeros(0, np.int16)
        self.los_start = np.zeros(0, np.int32)   # [S] admission day (days since 1970)
        col = cols["hospitalizations"]
        if col is not None and len(col.flatten()):
            values, pat = col.flatten(), pc.list_parent_indices(col).to_numpy().astype(np.int64)
            adm, dis = values.flatten()
            a, bad_a = self._days(adm, parser)
            d, bad_d = self._days(dis, parser)
            bad = _null_mask(values) | _null_mask(adm) | _null_mask(dis) | bad_a | bad_d | (d < a)
            b = self.birth[pat]
            bad |= (b != UNKNOWN_BIRTH) & (a < b)
            bad |= (d - a) > STAY_CAP_DAYS     # the per-record path leaves it out and counts it
            slow[pat[bad]] = True
            self.los_pat, self.los_days = pat, np.minimum(d - a, 32767).astype(np.int16)
            self.los_start = a.astype(np.int32)

    @staticmethod
    def _days(arr, parser: RecordParser) -> tuple[np.ndarray, np.ndarray]:
        """(days since 1970 [len], invalid [len]) of a date-string array."""
        nulls = _null_mask(arr)
        if arr.null_count == len(arr):
            return np.zeros(len(arr), dtype=np.int64), nulls
        # common case: all 'YYYY-MM-DD', which Arrow parses (in C++) exactly as date.fromisoformat does,
        # except that it also takes year 0; anything else parses each distinct string in Python
        if pc.all(pc.equal(pc.binary_length(arr), 10)).as_py():
            try:
                days = arr.cast(pa.date32()).cast(pa.int32()).fill_null(0).to_numpy().astype(np.int64)
                if days.min() >= _MIN_DAY:
                    return days, nulls
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        idx, distinct = _distinct(arr)
        days = [parser.day_or_none(v) for v in distinct]
        bad = np.array([d is None for d in days] or [True], dtype=bool)
        table = np.array([0 if d is None else d for d in days] or [0], dtype=np.int64)
        return table[idx], bad[idx] | nulls

    def new_tokens(self) -> list[tuple[int, int, int, str, str]]:
        """Codes of fast records without a token yet, in first-appearance order (record, category, event),
        as (record, category, event, system, code): the order the per-record path would create them."""
        out = []
        for c, system, idx, distinct, state, pat in filter(None, self.codes):
            pos = np.flatnonzero((state[idx] == _NEW) & ~self.slow[pat])
            if len(pos):
                u, first = np.unique(idx[pos], return_index=True)
                out += [(int(pat[p]), c, int(p), system, distinct[i]) for i, p in zip(u.tolist(), pos[first])]
        return sorted(out)

    def event_tokens(self, parser: RecordParser) -> np.ndarray:
        """[E] provisional token ids (category-major like ev_pat); -1 where a code never became a token."""
        parts = []
        for c, system, idx, distinct, state, pat in filter(None, self.codes):
            new = np.flatnonzero(state == _NEW)
            for i in new.tolist():
                state[i] = parser._by_raw.get((system, distinct[i]), _BAD)
            parts.append(state[idx])
        return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


def read_table(data: bytes, lines: int):
    """The block as a pyarrow Table, or None when it needs the per-record reader (bad JSON, unusual
    types, blank lines, non-UTF-8 bytes...: whatever makes pyarrow's rows differ from the reader's
    lines). Touches no parser state, so it may run in a background thread."""
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    # plain records first (any other key is an error there), then with `system` and other keys ignored, as
    # the per-record path ignores them; ids are text or integers
    for system, pid_type, unexpected in ((False, pa.string(), "error"), (True, pa.string(), "ignore"),
                                         (True, pa.int64(), "ignore")):
        fields = _schema(system) | {"patient_id": pid_type}
        try:
            table = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=1 << 20),
                                 parse_options=pj.ParseOptions(explicit_schema=pa.schema(list(fields.items())),
                                                               unexpected_field_behavior=unexpected))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
        return table if table.num_rows == lines else None
    return None


def fast_block(table, parser: RecordParser) -> FastBlock | None:
    if table is None:
        return None
    try:
        return FastBlock(table, parser)
    except (ValueError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
