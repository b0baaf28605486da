"""One output family of a conversion ('pretrain' or 'task'): accepted patients are encoded by chunks, kept
per split (token arrays spilled to disk), then each split is remapped to vocabulary ids and streamed into
its dataset file, without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exmed_bert.convert.columns import NO_CUT, NO_TIME, concat, cut_stays, rows_batch
from exmed_bert.convert.encode import encode_chunk
from exmed_bert.convert.validate import RecordParser
from exmed_bert.data.layout import DTYPES, FIRST_CODE_ID, TOKEN_KEYS, UNK_ID, US_PER_DAY, dataset_dict
from exmed_bert.data.ptfile import Chunks, write_pt
from exmed_bert.data.splits import SPLITS

# patients encoded together: encoding needs ~130 bytes per event of temporaries, so this bounds a
# conversion process's peak (1024 patients of the generator: ~125,000 events, ~17 MB; 2048 took 20 MB
# more at the same speed, 8192 110 MB more)
CHUNK = 1024
_KEYS = ("input_ids", "token_type_ids", "position_ids", "age_ids", "days", "lengths", "sex", "birth_days",
         "los_counts", "los_days", "los_start_days", "labels", "prediction_days", "prediction_times", "patient_ids")


class Family:
    """Encoded chunks of one output family ('pretrain' or 'task'), kept per split until writing."""

    def __init__(self, parser: RecordParser, max_length: int, task: bool, spill=None, label_times: bool = False,
                 cut_at_time: bool = False):
        """A task family with `label_times` (MEDS labels) records each row's prediction time
        (`prediction_times`: a subject may have several rows); with `cut_at_time` (events with times) it
        also keeps the prediction day's events before that time (`_before_times`)."""
        self.parser, self.max_length, self.task = parser, max_length, task
        self.label_times, self.cut_at_time = label_times, cut_at_time
        self.spill = spill                # a convert.spill.Spill: token arrays go to disk, not to `parts`
        self.rows: list[tuple] = []       # per-record rows not yet turned into a batch
        self.batches: list[dict] = []
        self.n_pending = 0
        self.parts = [{k: [] for k in _KEYS} for _ in SPLITS]
        self.no_events = 0
        self.stays_cut = np.zeros((len(SPLITS), 2), dtype=np.int64)  # task: [dropped, truncated] per split
        self.train_counts = np.zeros(0, dtype=np.int64)
        self._tt = np.zeros(0, dtype=np.int8)
        self._sk = np.zeros(0, dtype=np.int64)

    def add(self, p, split: int, label: int | None = None, cut: int | None = None, ptime: int | None = None) -> None:
        self.rows.append((p, split, label, cut, ptime))
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
        """Token types and each token's rank in code order, per provisional id. The rank orders by the
        code's sort key, then by the token's text: a pure function of the codes, never of the order
        they were first seen in, so a conversion split across workers orders every visit the same."""
        n_old, n = len(self._tt), len(self.parser.tokens)
        if n > n_old:  # grow with only the tokens first seen since the last chunk
            self._tt = np.concatenate([self._tt, np.asarray(self.parser.token_types[n_old:], dtype=np.int8)])
            keys, tokens = self.parser.sort_keys, self.parser.tokens
            self._sk = np.empty(n, dtype=np.int64)
            self._sk[sorted(range(n), key=lambda i: (keys[i], tokens[i]))] = np.arange(n)
        return self._tt, self._sk

    def flush(self) -> None:
        self._close_rows()
        if not self.batches:
            return
        b, self.batches, self.n_pending = concat(self.batches), [], 0
        tt, sk = self._token_tables()
        ev_pat, ev_day, ev_tok, cut = b["ev_pat"], b["ev_day"], b["ev_tok"], b["cut"]
        if self.task and self.cut_at_time and "ptime" in b:   # the prediction day's events before the time too
            ev_pat, ev_day, ev_tok, cut = _before_times(b)
        # a task row with no event before its time is kept as [CLS] alone on its prediction day, so every label
        # row gets a prediction (from age and sex); a pretraining patient always has events
        empty = np.where(b["cut"] == NO_CUT, 0, b["cut"]) if self.task else None
        enc = encode_chunk(None, ev_day, ev_tok, b["birth"], tt, sk, self.max_length,
                           cut if self.task else None, event_patients=ev_pat, empty_days=empty)
        if self.task:   # rows whose history is [CLS] alone
            self.no_events += int(np.count_nonzero(np.bincount(ev_pat[ev_day < cut[ev_pat]], minlength=b["n"]) == 0))
        rows = np.flatnonzero(enc["lengths"] > 0)
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
            for k in TOKEN_KEYS:
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
                # the first day after the history: the prediction date; the day after a prediction time's day
                # (events earlier that day are in); no prediction date: the day after the last event
                c = cut[r]
                parts["prediction_days"].append(np.where(c == NO_CUT, enc["last_day"][r] + 1, c).astype(np.int32))
                if self.label_times:
                    parts["prediction_times"].append(b["ptime"][r] if "ptime" in b else np.full(len(r), NO_TIME))
            if s == 0 and not self.task:
                c = np.bincount(ids, minlength=len(self.parser.tokens))
                c[: len(self.train_counts)] += self.train_counts
                self.train_counts = c

    def export(self) -> dict:
        """Everything this family encoded, per split (a worker's family), for `merge`: token arrays as the
        names of its spill files when it has a spill, else as arrays; the rest as arrays."""
        self.flush()
        parts = [{k: (v if k == "patient_ids" else np.concatenate(v) if v else None) for k, v in p.items()
                  if not (self.spill is not None and k in TOKEN_KEYS)} for p in self.parts]
        return {"parts": parts, "spilled": self.spill.export() if self.spill is not None else None,
                "train_counts": self.train_counts, "no_events": self.no_events, "stays_cut": self.stays_cut}

    def merge(self, other: dict, lut: np.ndarray) -> None:
        """Append another family's `export` (a worker's, encoded with its own provisional ids; `lut` maps
        them to this parser's) after everything added so far. Spilled token files are adopted as they are
        (`lut` applied when the split is written), never read here."""
        self.flush()
        if other["spilled"] is not None:
            if self.spill is None:
                raise ValueError("a family without a spill cannot merge spilled token files")
            self.spill.adopt(other["spilled"], lut)
        for s, (mine, theirs) in enumerate(zip(self.parts, other["parts"])):
            for k, v in theirs.items():
                if k == "patient_ids":
                    mine[k].extend(v)
                    continue
                if v is None:
                    continue
                if k == "input_ids":
                    v = lut[v]
                if self.spill is not None and k in TOKEN_KEYS:
                    self.spill.append(s, k, v)
                else:
                    mine[k].append(v)
        theirs = other["train_counts"]
        if len(theirs):
            c = np.bincount(lut[:len(theirs)], weights=theirs, minlength=len(self.parser.tokens)).astype(np.int64)
            c[:len(self.train_counts)] += self.train_counts
            self.train_counts = c
        self.no_events += other["no_events"]
        self.stays_cut += other["stays_cut"]

    def write(self, split: int, path: Path, lut: np.ndarray, vocab_fingerprint: str, stage=lambda p: p) -> dict:
        """Write one split (to `stage(path)`), token arrays streamed from the spill and remapped to vocabulary
        ids chunk by chunk; returns its manifest entry. Needs no torch (exmed_bert.data.ptfile)."""
        parts, self.parts[split] = self.parts[split], {}
        patient_ids = parts.pop("patient_ids")
        cat = {k: np.concatenate(v) if v else np.zeros(0, dtype=DTYPES.get(k, np.int64))
               for k, v in parts.items() if k not in TOKEN_KEYS}
        lengths = cat["lengths"].astype(np.int64)
        cat["offsets"] = np.r_[0, np.cumsum(lengths)]
        cat["los_offsets"] = np.r_[0, np.cumsum(cat["los_counts"].astype(np.int64))]
        for k in TOKEN_KEYS:   # input ids are mapped to vocabulary ids as they are read
            k_lut = lut if k == "input_ids" else None
            if self.spill is not None:
                cat[k] = self.spill.chunks(split, k, DTYPES[k], lut=k_lut)
            else:
                whole = np.concatenate(parts[k]) if parts[k] else np.zeros(0, dtype=DTYPES[k])
                cat[k] = Chunks(DTYPES[k], len(whole), lambda w=whole, m=k_lut: [w if m is None else m[w]])
            if cat[k].length != cat["offsets"][-1]:
                raise RuntimeError(f"{k}: {cat[k].length} tokens written for {cat['offsets'][-1]} (a conversion bug)")
        mapped, tally = cat["input_ids"], {"code": 0, "unk": 0}

        def counted():
            # a code is either in the vocabulary (an id from FIRST_CODE_ID on) or [UNK]: provisional ids never
            # hold [UNK], and the special tokens map to themselves
            for ids in mapped.chunks():
                unk = int(np.count_nonzero(ids == UNK_ID))
                tally["unk"] += unk
                tally["code"] += int(np.count_nonzero(ids >= FIRST_CODE_ID)) + unk
                yield ids

        cat["input_ids"] = Chunks(DTYPES["input_ids"], mapped.length, counted)
        data = dataset_dict(cat, patient_ids, cat["labels"] if self.task else None,
                            cat["prediction_days"] if self.task else None,
                            cat["prediction_times"] if self.label_times else None)
        data["vocab_fingerprint"] = vocab_fingerprint  # lets loaders catch a dataset/vocab.json mismatch
        write_pt(stage(path), data)
        entry = {"path": path.name, "patients": len(patient_ids), "tokens": int(lengths.sum()),
                 "code_tokens": tally["code"], "unk_tokens": tally["unk"], "length_percentiles": _percentiles(lengths)}
        if self.task:
            labels = cat["labels"].astype(np.int64)
            entry["label_counts"] = {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
            dropped, truncated = self.stays_cut[split].tolist()
            entry["stays_cut_at_prediction_date"] = {"dropped": dropped, "truncated": truncated}
        return entry


def _before_times(b: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ev_pat, ev_day, ev_tok, prediction day) of a task batch with prediction times ("ptime"), cut as MEDS
    reads a label: data up to and including prediction_time. A patient with a prediction time keeps its
    prediction day's events whose time is known and at or before it (an event of that day with no time of
    day, or an unknown one, is left out: it may be later); every other patient keeps the day cut. Stays
    keep the day cut (`cut_stays`).

    The prediction day is the day the history is read on, that time and age count back from: the day after
    the prediction date when the history reaches into that date (a time after its midnight, or an event kept
    at exactly midnight), else the date itself (a midnight prediction time with nothing at it: the history
    ends the day before, as a task CSV's prediction date has it)."""
    cut, ptime, pat = b["cut"], b["ptime"], b["ev_pat"]
    timed = (cut != NO_CUT) & (ptime != NO_TIME)
    on_day = timed[pat] & (b["ev_day"] == cut[pat])
    times = b.get("ev_time")
    late = on_day if times is None else on_day & (times > ptime[pat])   # unknown times are NO_TIME: late
    keep = ~late
    midnight = timed & (ptime == np.where(timed, cut, 0).astype(np.int64) * US_PER_DAY)   # NO_CUT would overflow
    reached = np.bincount(pat[on_day & keep], minlength=len(cut)) > 0   # an event kept on the prediction date
    into_day = timed & (~midnight | reached)
    return pat[keep], b["ev_day"][keep], b["ev_tok"][keep], np.where(into_day, cut + 1, cut).astype(np.int32)


def _percentiles(lengths: np.ndarray) -> dict:
    if not len(lengths):
        return {}
    qs = (0, 5, 25, 50, 75, 95, 99, 100)
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(lengths, qs))} | {"mean": float(lengths.mean())}
