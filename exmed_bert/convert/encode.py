"""Vectorised encoding of a chunk of validated patients into the flat token layout of a dataset.

Per patient: [CLS], then one block per visit (the events of one day, ordered diagnoses, drugs,
procedures, then by code) closed by [SEP]. Histories longer than `max_length` lose whole visits from
the oldest end; a single visit longer than `max_length - 2` keeps its first events (in visit order).
All work is numpy over the whole chunk; there is no per-token Python loop.
"""

from __future__ import annotations

import numpy as np

from exmed_bert.data.layout import CLS_ID, SEP_ID, UNKNOWN_BIRTH

MAX_AGE = 120


def _year_and_monthday(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calendar year and month*32 + day of each day number (days since 1970)."""
    d = days.astype("datetime64[D]")
    m = d.astype("datetime64[M]")
    y = m.astype("datetime64[Y]")
    return y.astype(np.int64) + 1970, (m - y).astype(np.int64) * 32 + (d - m).astype(np.int64)


def ages_in_years(birth_days: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Whole years between two day numbers (calendar-exact), clamped to 0..120; unknown birth -> 0."""
    known = birth_days != UNKNOWN_BIRTH
    b = np.where(known, birth_days, days).astype(np.int64)
    d = np.asarray(days, dtype=np.int64)
    if not len(d):
        return np.zeros(0, dtype=np.int16)
    lo, hi = int(min(b.min(), d.min())), int(max(b.max(), d.max()))
    if hi - lo < 400_000:  # one calendar table over the span, then lookups (cheaper than per-value dates)
        year, md = _year_and_monthday(np.arange(lo, hi + 1, dtype=np.int64))
        by, bmd, dy, dmd = year[b - lo], md[b - lo], year[d - lo], md[d - lo]
    else:
        (by, bmd), (dy, dmd) = _year_and_monthday(b), _year_and_monthday(d)
    age = (dy - by) - (dmd < bmd)   # minus one when this year's birthday is still ahead
    return np.where(known, np.clip(age, 0, MAX_AGE), 0).astype(np.int16)


def _event_order(pat, day, typ, tok, sort_keys) -> np.ndarray:
    """Order by (patient, day, type, code, token id) with one int64 argsort instead of a 5-key lexsort."""
    if len(tok) == 0:
        return np.zeros(0, dtype=np.int64)
    # code order over the whole token table (small): rank by (sort key, token id)
    rank = np.empty(len(sort_keys), dtype=np.int64)
    rank[np.lexsort((np.arange(len(sort_keys)), sort_keys))] = np.arange(len(sort_keys))
    d = day.astype(np.int64) - int(day.min())
    bits_r, bits_d = int(len(sort_keys)).bit_length(), int(d.max()).bit_length()
    bits_p = int(pat.max()).bit_length() if len(pat) else 0
    if bits_r + bits_d + 2 + bits_p > 62:
        return np.lexsort((tok, sort_keys[tok], typ, day, pat))
    key = (((pat << bits_d | d) << 2 | typ) << bits_r) | rank[tok]
    # equal keys are equal events (same patient, day and token), so an unstable sort gives the same output
    return np.argsort(key)


def encode_chunk(event_counts, event_days, event_toks, birth_days, token_types: np.ndarray,
                 sort_keys: np.ndarray, max_length: int, cutoff_days: np.ndarray | None = None,
                 event_patients: np.ndarray | None = None, empty_days: np.ndarray | None = None) -> dict:
    """Encode N patients whose events are given flat (patient-major, any order within a patient).

    event_counts [N]; event_days, event_toks [E] (days since 1970, provisional token ids);
    birth_days [N]; token_types / sort_keys [V] per provisional id; cutoff_days [N] keeps only events
    strictly before it (task datasets); event_patients [E] gives each event's patient instead of
    event_counts (then events may come in any order); empty_days [N] gives a patient with no event left a
    [CLS]-only row on that day (a task row with no history: scored from age and sex), else such a patient
    has no row. Returns flat arrays over T output tokens plus `lengths` [N] (0 for a patient without a row)
    and `first_day`, `last_day` [N].
    """
    if max_length < 3:
        raise ValueError("max_length must be at least 3 ([CLS], one code, [SEP])")
    n = len(birth_days)
    if event_patients is None:
        pat = np.repeat(np.arange(n, dtype=np.int64), np.asarray(event_counts, dtype=np.int64))
    else:
        pat = np.asarray(event_patients, dtype=np.int64)
    day = np.asarray(event_days, dtype=np.int32)
    tok = np.asarray(event_toks, dtype=np.int32)
    birth = np.asarray(birth_days, dtype=np.int32)
    if cutoff_days is not None:
        keep = day < np.asarray(cutoff_days, dtype=np.int32)[pat]
        pat, day, tok = pat[keep], day[keep], tok[keep]
    typ = token_types[tok]
    order = _event_order(pat, day, typ, tok, sort_keys)
    pat, day, tok, typ = pat[order], day[order], tok[order], typ[order]

    # visits = runs of equal (patient, day); rank = event index within its visit
    new_visit = np.ones(len(pat), dtype=bool)
    new_visit[1:] = (pat[1:] != pat[:-1]) | (day[1:] != day[:-1])
    visit = np.cumsum(new_visit) - 1
    vstart = np.flatnonzero(new_visit)
    rank = np.arange(len(pat)) - vstart[visit]
    vpat, vday = pat[vstart], day[vstart]
    over = rank >= max_length - 2
    if over.any():  # one visit longer than the whole budget keeps its first events
        keep = ~over
        pat, day, tok, typ, visit, rank = pat[keep], day[keep], tok[keep], typ[keep], visit[keep], rank[keep]
    vsize = np.bincount(visit, minlength=len(vstart))

    # keep the most recent visits whose tokens (+[SEP] each, +[CLS]) fit in max_length
    cost = vsize + 1
    csum = np.cumsum(cost)
    last_visit = np.searchsorted(vpat, np.arange(n), side="right") - 1   # per patient (-1: none)
    suffix = csum[last_visit[vpat]] - csum + cost                         # this and later visits
    vkeep = suffix + 1 <= max_length
    ekeep = vkeep[visit]
    pat, day, tok, typ, visit, rank = pat[ekeep], day[ekeep], tok[ekeep], typ[ekeep], visit[ekeep], rank[ekeep]
    kept = np.flatnonzero(vkeep)
    vpat, vday, vsize, cost = vpat[kept], vday[kept], vsize[kept], cost[kept]
    remap = np.full(len(vkeep), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    visit = remap[visit]

    lengths = np.bincount(vpat, weights=cost, minlength=n).astype(np.int64)
    has = lengths > 0 if empty_days is None else np.ones(n, dtype=bool)
    lengths[has] += 1                                                     # [CLS]
    row = np.cumsum(has) - 1                                              # output row per patient
    offsets = np.zeros(int(has.sum()) + 1, dtype=np.int64)
    np.cumsum(lengths[has], out=offsets[1:])
    total = int(offsets[-1])

    # output index of each visit's first token: visits before it (+[SEP]s) + [CLS]s up to its patient
    vout = np.cumsum(cost) - cost + row[vpat] + 1
    first_visit = np.r_[True, vpat[1:] != vpat[:-1]] if len(vpat) else np.zeros(0, bool)
    vnum = np.arange(len(vpat)) - np.maximum.accumulate(np.where(first_visit, np.arange(len(vpat)), 0)) + 1
    vage = ages_in_years(birth[vpat], vday)

    input_ids = np.empty(total, dtype=np.int32)
    token_type = np.zeros(total, dtype=np.int8)
    position = np.empty(total, dtype=np.int16)
    age = np.empty(total, dtype=np.int16)
    days = np.empty(total, dtype=np.int32)

    eidx = vout[visit] + rank
    input_ids[eidx], token_type[eidx] = tok, typ
    position[eidx], age[eidx], days[eidx] = vnum[visit], vage[visit], vday[visit]
    sidx = vout + vsize
    input_ids[sidx], position[sidx], age[sidx], days[sidx] = SEP_ID, vnum, vage, vday
    cidx = offsets[:-1]
    fv = np.flatnonzero(first_visit)                                      # first kept visit per patient
    if empty_days is None:
        input_ids[cidx], position[cidx], age[cidx], days[cidx] = CLS_ID, 0, vage[fv], vday[fv]
    else:   # every patient has a row: [CLS] on its first visit's day, or on empty_days[i] when it has none
        cls_day = np.asarray(empty_days, dtype=np.int32).copy()
        cls_day[vpat[fv]] = vday[fv]
        input_ids[cidx], position[cidx], days[cidx] = CLS_ID, 0, cls_day
        age[cidx] = ages_in_years(birth, cls_day)

    first_day = np.zeros(n, dtype=np.int32)
    last_day = np.zeros(n, dtype=np.int32)
    first_day[vpat[fv]] = vday[fv]
    lv = np.r_[fv[1:] - 1, len(vpat) - 1] if len(fv) else fv
    last_day[vpat[lv]] = vday[lv]
    return {"input_ids": input_ids, "token_type_ids": token_type, "position_ids": position,
            "age_ids": age, "days": days, "lengths": lengths, "first_day": first_day, "last_day": last_day}
