"""Accepted patients as columnar batches: a dict of numpy arrays over n patients, and the operations on it.

A batch is a dict over n patients: split, pids, sex, birth, label, cut [n]; events ev_pat, ev_day,
ev_tok [E] (ev_pat = patient index, any order); stays los_pat (non-decreasing), los_days, los_start [S]
(length in days, admission day as days since 1970). Optionally ptime [n] (a MEDS label's prediction
time, microseconds since 1970, NO_TIME for none) and ev_time [E] (each event's time, NO_TIME unknown).

A task family keeps the events of days before the prediction day ("cut") and, for a patient with a
prediction time, the events of that day whose time is known to be at or before it (MEDS: data up to and
including prediction_time; a date-only event, or one of unknown time, is left out that day). Stays carry
days, not times, so they are cut at the prediction day: a stay admitted before it is kept, its length
truncated to (prediction day - admission day) when it ends later (a stay ending on the prediction day, as
an admission whose discharge is the prediction time, keeps its whole length); one admitted on or after
the prediction day is dropped (when on that day it began is not known). A row with no event left keeps
a [CLS]-only sequence (age and sex known).
"""

from __future__ import annotations

from itertools import chain

import numpy as np

NO_CUT = np.iinfo(np.int32).max  # "cut" of a patient without a prediction date
NO_TIME = np.iinfo(np.int64).max  # "ptime" of a patient without a prediction time; "ev_time" unknown
_OPTIONAL = {"ptime": "patient", "ev_time": "event"}   # batch keys that some batches carry


def rows_batch(rows: list[tuple]) -> dict:
    """A batch from per-record rows (Parsed, split, label or None, cut day or None, prediction time or None)."""
    pats = [r[0] for r in rows]
    n = len(rows)
    counts = np.fromiter((len(p.days) for p in pats), dtype=np.int64, count=n)
    stays = np.fromiter((len(p.stays) for p in pats), dtype=np.int64, count=n)
    extra = {}
    if any(r[4] is not None for r in rows):
        extra["ptime"] = np.array([NO_TIME if r[4] is None else r[4] for r in rows], dtype=np.int64)
    if any(p.times is not None for p in pats):
        extra["ev_time"] = event_times(pats)
    return extra | {"n": n, "split": np.array([r[1] for r in rows], dtype=np.int8), "pids": [p.patient_id for p in pats],
            "sex": np.array([p.sex for p in pats], dtype=np.int8),
            "birth": np.array([p.birth_day for p in pats], dtype=np.int32),
            "label": np.array([0 if r[2] is None else r[2] for r in rows], dtype=np.int64),
            "cut": np.array([NO_CUT if r[3] is None else r[3] for r in rows], dtype=np.int32),
            "ev_pat": np.repeat(np.arange(n, dtype=np.int64), counts),
            "ev_day": np.array(list(chain.from_iterable(p.days for p in pats)), dtype=np.int32),
            "ev_tok": np.array(list(chain.from_iterable(p.toks for p in pats)), dtype=np.int32),
            "los_pat": np.repeat(np.arange(n, dtype=np.int64), stays),
            "los_days": np.array(list(chain.from_iterable(p.stays for p in pats)), dtype=np.int16),
            "los_start": np.array(list(chain.from_iterable(p.stay_starts for p in pats)), dtype=np.int32)}


def event_times(pats: list) -> np.ndarray:
    """ev_time [E] of Parsed records, in their event order (NO_TIME where unknown)."""
    return np.array([NO_TIME if t is None else t for p in pats
                     for t in (p.times if p.times is not None else [None] * len(p.days))], dtype=np.int64)


def select(b: dict, keep: np.ndarray) -> dict:
    """The patients where keep [n] is True, in order."""
    remap = np.cumsum(keep) - 1
    ev, st = keep[b["ev_pat"]], keep[b["los_pat"]]
    out = {k: b[k][keep] for k in ("split", "sex", "birth", "label", "cut")}
    out.update({k: b[k][keep if level == "patient" else ev] for k, level in _OPTIONAL.items() if k in b})
    out.update(n=int(keep.sum()), pids=[b["pids"][i] for i in np.flatnonzero(keep).tolist()],
               ev_pat=remap[b["ev_pat"][ev]], ev_day=b["ev_day"][ev], ev_tok=b["ev_tok"][ev],
               los_pat=remap[b["los_pat"][st]], los_days=b["los_days"][st], los_start=b["los_start"][st])
    return out


def take(b: dict, idx: np.ndarray) -> dict:
    """Patients idx (an index array; a patient may repeat) of batch b, in that order, each with its own copy
    of its events and stays (events grouped by patient, in their order within it)."""
    n, m = b["n"], len(idx)
    out = {k: b[k][idx] for k in ("split", "sex", "birth", "label", "cut")}
    out.update({k: b[k][idx] for k, level in _OPTIONAL.items() if level == "patient" and k in b})
    out.update(n=m, pids=[b["pids"][i] for i in idx.tolist()])
    ev_order = np.argsort(b["ev_pat"], kind="stable")
    ev = ev_order[_ranges(b["ev_pat"], n, idx)]
    out.update(ev_pat=np.repeat(np.arange(m, dtype=np.int64), np.bincount(b["ev_pat"], minlength=n)[idx]),
               ev_day=b["ev_day"][ev], ev_tok=b["ev_tok"][ev])
    out.update({k: b[k][ev] for k, level in _OPTIONAL.items() if level == "event" and k in b})
    st = _ranges(b["los_pat"], n, idx)   # stays are patient-major already
    out.update(los_pat=np.repeat(np.arange(m, dtype=np.int64), np.bincount(b["los_pat"], minlength=n)[idx]),
               los_days=b["los_days"][st], los_start=b["los_start"][st])
    return out


def _ranges(owner: np.ndarray, n: int, idx: np.ndarray) -> np.ndarray:
    """Positions, in `owner` sorted by patient (stably), of the elements of patients idx, in that order."""
    counts = np.bincount(owner, minlength=n).astype(np.int64)
    starts = np.cumsum(counts) - counts
    c = counts[idx]
    before = np.cumsum(c) - c
    return np.arange(int(c.sum()), dtype=np.int64) - np.repeat(before, c) + np.repeat(starts[idx], c)


def concat(batches: list[dict]) -> dict:
    if len(batches) == 1:
        return batches[0]
    base = np.cumsum([0] + [b["n"] for b in batches[:-1]])
    out = {k: np.concatenate([b[k] for b in batches]) for k in
           ("split", "sex", "birth", "label", "cut", "ev_day", "ev_tok", "los_days", "los_start")}
    for k, level in _OPTIONAL.items():   # NO_TIME where a batch does not carry the key
        if any(k in b for b in batches):
            out[k] = np.concatenate([b[k] if k in b else np.full(b["n"] if level == "patient" else len(b["ev_day"]),
                                                                  NO_TIME, dtype=np.int64) for b in batches])
    out.update(n=int(sum(b["n"] for b in batches)), pids=list(chain.from_iterable(b["pids"] for b in batches)),
               ev_pat=np.concatenate([b["ev_pat"] + o for b, o in zip(batches, base)]),
               los_pat=np.concatenate([b["los_pat"] + o for b, o in zip(batches, base)]))
    return out


def cut_stays(los_days: np.ndarray, los_start: np.ndarray, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stays as known on each one's prediction day cut [S] (NO_CUT: no date, nothing cut).

    Returns (kept [S] bool: admitted strictly before the cut, lengths [S] int16 with open stays truncated
    to cut - admission, truncated [S] bool: kept and shortened).
    """
    start = los_start.astype(np.int64)
    kept = start < cut
    known = np.minimum(los_days.astype(np.int64), cut.astype(np.int64) - start)  # int64: NO_CUT - start fits
    truncated = kept & (known < los_days)
    return kept, np.where(truncated, known, los_days).astype(np.int16), truncated
