"""Accepted patients as columnar batches, and the per-family buffer that encodes them by chunks.

A batch is a dict over n patients: split, pids, sex, birth, label, cut [n]; events ev_pat, ev_day,
ev_tok [E] (ev_pat = patient index, any order); stays los_pat (non-decreasing), los_days, los_start [S]
(length in days, admission day as days since 1970).

A task family cuts stays at the prediction date ("cut"), like events: a stay admitted on or after it is
dropped, and one still open on it is truncated to (prediction day - admission day), what was known then.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from exmed_bert.data.encode import encode_chunk
from exmed_bert.data.splits import SPLITS
from exmed_bert.data.validate import RecordParser

CHUNK = 8192
NO_CUT = np.iinfo(np.int32).max
_KEYS = ("input_ids", "token_type_ids", "position_ids", "age_ids", "days", "lengths", "sex", "birth_days",
         "los_counts", "los_days", "los_start_days", "labels", "prediction_days", "patient_ids")


def rows_batch(rows: list[tuple]) -> dict:
    """A batch from per-record rows (Parsed, split, label or None, cut day or None)."""
    pats = [r[0] for r in rows]
    n = len(rows)
    counts = np.fromiter((len(p.days) for p in pats), dtype=np.int64, count=n)
    stays = np.fromiter((len(p.stays) for p in pats), dtype=np.int64, count=n)
    return {"n": n, "split": np.array([r[1] for r in rows], dtype=np.int8), "pids": [p.patient_id for p in pats],
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


def select(b: dict, keep: np.ndarray) -> dict:
    """The patients where keep [n] is True, in order."""
    remap = np.cumsum(keep) - 1
    ev, st = keep[b["ev_pat"]], keep[b["los_pat"]]
    out = {k: b[k][keep] for k in ("split", "sex", "birth", "label", "cut")}
    out.update(n=int(keep.sum()), pids=[b["pids"][i] for i in np.flatnonzero(keep).tolist()],
               ev_pat=remap[b["ev_pat"][ev]], ev_day=b["ev_day"][ev], ev_tok=b["ev_tok"][ev],
               los_pat=remap[b["los_pat"][st]], los_days=b["los_days"][st], los_start=b["los_start"][st])
    return out


def concat(batches: list[dict]) -> dict:
    if len(batches) == 1:
        return batches[0]
    base = np.cumsum([0] + [b["n"] for b in batches[:-1]])
    out = {k: np.concatenate([b[k] for b in batches]) for k in
           ("split", "sex", "birth", "label", "cut", "ev_day", "ev_tok", "los_days", "los_start")}
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


class Family:
    """Encoded chunks of one output family ('pretrain' or 'task'), kept per split until writing."""

    def __init__(self, parser: RecordParser, max_length: int, task: bool, spill=None):
        self.parser, self.max_length, self.task = parser, max_length, task
        self.spill = spill                # a data.spill.Spill: token arrays go to disk, not to `parts`
        self.rows: list[tuple] = []       # per-record rows not yet turned into a batch
        self.batches: list[dict] = []
        self.n_pending = 0
        self.parts = [{k: [] for k in _KEYS} for _ in SPLITS]
        self.no_events = 0
        self.stays_cut = np.zeros((len(SPLITS), 2), dtype=np.int64)  # task: [dropped, truncated] per split
        self.train_counts = np.zeros(0, dtype=np.int64)
        self._tt = np.zeros(0, dtype=np.int8)
        self._sk = np.zeros(0, dtype=np.int64)

    def add(self, p, split: int, label: int | None = None, cut: int | None = None) -> None:
        self.rows.append((p, split, label, cut))
        self.n_pending += 1
        if self.n_pending >= CHUNK:
            self.flush()

    def add_batch(self, batch: dict) -> None:
        self._close_rows()
        self.batches.append(batch)
        self.n_pending += batch["n"]
        if self.n_pending >= CHUNK:
            self.flush()

    def _close_rows(self) -> None:
        if self.rows:
            self.batches.append(rows_batch(self.rows))
            self.rows = []

    def _token_tables(self) -> tuple[np.ndarray, np.ndarray]:
        n_old, n = len(self._tt), len(self.parser.tokens)
        if n > n_old:  # grow with only the tokens first seen since the last chunk
            self._tt = np.concatenate([self._tt, np.asarray(self.parser.token_types[n_old:], dtype=np.int8)])
            self._sk = np.concatenate([self._sk, np.asarray(self.parser.sort_keys[n_old:], dtype=np.int64)])
        return self._tt, self._sk

    def flush(self) -> None:
        self._close_rows()
        if not self.batches:
            return
        b, self.batches, self.n_pending = concat(self.batches), [], 0
        tt, sk = self._token_tables()
        enc = encode_chunk(None, b["ev_day"], b["ev_tok"], b["birth"], tt, sk, self.max_length,
                           b["cut"] if self.task else None, event_patients=b["ev_pat"])
        has = enc["lengths"] > 0
        self.no_events += int((~has).sum())
        rows = np.flatnonzero(has)
        split = b["split"][rows]
        tok_split = np.repeat(split, enc["lengths"][rows])
        los_pat, los_days, los_start = b["los_pat"], b["los_days"], b["los_start"]
        if self.task:  # nothing on or after the prediction date, stays included
            kept, los_days, truncated = cut_stays(los_days, los_start, b["cut"][los_pat])
            cut_counts = np.stack([np.bincount(los_pat[~kept], minlength=b["n"]),
                                   np.bincount(los_pat[truncated], minlength=b["n"])], axis=1)  # [n, 2]
            los_pat, los_days, los_start = los_pat[kept], los_days[kept], los_start[kept]
        los_counts = np.bincount(los_pat, minlength=b["n"]).astype(np.int64)
        for s, parts in enumerate(self.parts):
            m, r = tok_split == s, rows[split == s]
            if not len(r):
                continue
            ids = enc["input_ids"][m]
            for k in ("input_ids", "token_type_ids", "position_ids", "age_ids", "days"):
                if self.spill is not None:
                    self.spill.append(s, k, ids if k == "input_ids" else enc[k][m])
                else:
                    parts[k].append(ids if k == "input_ids" else enc[k][m])
            parts["lengths"].append(enc["lengths"][r])
            parts["patient_ids"].extend(b["pids"][i] for i in r.tolist())
            parts["sex"].append(b["sex"][r])
            parts["birth_days"].append(b["birth"][r])
            parts["los_counts"].append(los_counts[r])
            chosen = np.zeros(b["n"], dtype=bool)
            chosen[r] = True
            mine = chosen[los_pat]
            parts["los_days"].append(los_days[mine])
            parts["los_start_days"].append(los_start[mine])
            if self.task:
                self.stays_cut[s] += cut_counts[r].sum(axis=0)
                parts["labels"].append(b["label"][r])
                # no prediction date: the day after the patient's last event ("all history")
                cut = b["cut"][r]
                parts["prediction_days"].append(np.where(cut == NO_CUT, enc["last_day"][r] + 1, cut).astype(np.int32))
            if s == 0 and not self.task:
                c = np.bincount(ids, minlength=len(self.parser.tokens))
                c[: len(self.train_counts)] += self.train_counts
                self.train_counts = c
