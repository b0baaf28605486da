"""Vectorised encoding of a chunk of validated patients into the flat token layout of a dataset.

Per patient: [CLS], then one block per visit (the events of one day, ordered diagnoses, drugs,
procedures, then by code) closed by [SEP]. Histories longer than `max_length` lose whole visits from
the oldest end; a single visit longer than `max_length - 2` keeps its first events (in visit order).
All work is numpy over the whole chunk; there is no per-token Python loop.
"""

from __future__ import annotations

import numpy as np

from exmed_bert.data.validate import UNKNOWN_BIRTH
from exmed_bert.data.vocab import CLS_ID, SEP_ID

MAX_AGE = 120


def ages_in_years(birth_days: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Whole years between two day numbers (calendar-exact), clamped to 0..120; unknown birth -> 0."""
    known = birth_days != UNKNOWN_BIRTH
    b = np.where(known, birth_days, 0).astype("datetime64[D]")
    d = days.astype("datetime64[D]")
    bm, dm = b.astype("datetime64[M]"), d.astype("datetime64[M]")
    by, dy = bm.astype("datetime64[Y]"), dm.astype("datetime64[Y]")
    # (month, day) of each date as month*32 + day, to compare "has the birthday passed this year"
    bmd = (bm - by).astype(np.int64) * 32 + (b - bm).astype(np.int64)
    dmd = (dm - dy).astype(np.int64) * 32 + (d - dm).astype(np.int64)
    age = (dy.astype(np.int64) - by.astype(np.int64)) - (dmd < bmd)
    return np.where(known, np.clip(age, 0, MAX_AGE), 0).astype(np.int16)


def _event_order(pat, day, typ, tok, sort_keys) -> np.ndarray:
    """Order by (patient, day, type, code, token id) with one int64 argsort instead of a 5-key lexsort."""
    if len(tok) == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inv = np.unique(tok, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.lexsort((uniq, sort_keys[uniq]))] = np.arange(len(uniq))  # code order among this chunk's tokens
    d = day.astype(np.int64) - int(day.min())
    bits_r, bits_d = int(len(uniq)).bit_length(), int(d.max()).bit_length()
    bits_p = int(pat[-1]).bit_length() if len(pat) else 0
    if bits_r + bits_d + 2 + bits_p > 62:
        return np.lexsort((tok, sort_keys[tok], typ, day, pat))
    key = (((pat << bits_d | d) << 2 | typ) << bits_r) | rank[inv.reshape(-1)]
    return np.argsort(key, kind="stable")


def encode_chunk(event_counts, event_days, event_toks, birth_days, token_types: np.ndarray,
                 sort_keys: np.ndarray, max_length: int, cutoff_days: np.ndarray | None = None) -> dict:
    """Encode N patients whose events are given flat (patient-major, any order within a patient).

    event_counts [N]; event_days, event_toks [E] (days since 1970, provisional token ids);
    birth_days [N]; token_types / sort_keys [V] per provisional id; cutoff_days [N] keeps only events
    strictly before it (task datasets). Returns flat arrays over T output tokens plus `lengths` [N]
    (0 for a patient with no event left) and `first_day`, `last_day` [N].
    """
    if max_length < 3:
        raise ValueError("max_length must be at least 3 ([CLS], one code, [SEP])")
    counts = np.asarray(event_counts, dtype=np.int64)
    n = len(counts)
    pat = np.repeat(np.arange(n, dtype=np.int64), counts)
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
    has = lengths > 0
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
    input_ids[cidx], position[cidx], age[cidx], days[cidx] = CLS_ID, 0, vage[fv], vday[fv]

    first_day = np.zeros(n, dtype=np.int32)
    last_day = np.zeros(n, dtype=np.int32)
    first_day[vpat[fv]] = vday[fv]
    lv = np.r_[fv[1:] - 1, len(vpat) - 1] if len(fv) else fv
    last_day[vpat[lv]] = vday[lv]
    return {"input_ids": input_ids, "token_type_ids": token_type, "position_ids": position,
            "age_ids": age, "days": days, "lengths": lengths, "first_day": first_day, "last_day": last_day}
