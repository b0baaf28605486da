"""The conversion pass: accept or reject each record in input order, write rejects, assign splits and
labels, and hand accepted patients to the output families. Columnar blocks (JSONL, MEDS) take the fast
path; every record it flags, and every patient dict a format sends, takes the per-record path. `Job` is
what a pass is built from, in the main process and in each worker alike.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from exmed_bert.convert.args import ConvertArgs
from exmed_bert.convert.columns import NO_CUT, NO_TIME, event_times, select, take
from exmed_bert.convert.family import Family
from exmed_bert.convert.fastpath import FastBlock
from exmed_bert.convert.formats.base import Source
from exmed_bert.convert.validate import Parsed, RecordParser, Reject
from exmed_bert.data.splits import split_index
from exmed_bert.errors import UserError


def reason_kind(reason: str) -> str:
    """Group reasons for the summary: the text before the first quote or number."""
    for stop in (" '", ' "', " (", ":"):
        reason = reason.split(stop, 1)[0]
    return reason.strip()


def reject_line(record: int, pid, reason: str) -> str:
    """One line of the rejects file."""
    return json.dumps({"record": record, "patient_id": pid, "reason": reason}) + "\n"


def fail_message(input, record: int, pid, reason: str) -> str:
    """The error of --on-error fail at a bad record."""
    return f"{input}: record {record} (patient_id {pid!r}): {reason}; fix the record or use --on-error skip"


@dataclass
class Job:
    """What every pass over the input is built from (`start`): the main process's, and each worker's, which
    gets it once when it starts."""
    args: ConvertArgs
    source: Source                 # the opened input (a worker reopens what it reads from it)
    pretraining: bool              # False: a task-only build (with a fixed vocabulary)
    labels: dict | None            # {patient_id: [(label, prediction day or None, prediction time or None), ...]}
    splits: object | None = None   # the input's own subject splits (`Source.subject_splits`); None: id hash
    timed: bool = False            # events carry times: the task split is cut at each prediction time
    label_times: bool = False      # task rows record their prediction time
    spill_dir: str | None = None   # the main process's spill folder: workers spill token arrays there

    def start(self, spills, rejects, on_error: str | None = None) -> "Intake":
        """A pass with its own token table, output families spilling to `spills` (pretrain, task) and
        rejects written to `rejects`; `on_error` overrides the setting (a worker skips: the main process
        decides what fails)."""
        parser = RecordParser(other_codes=self.args.other_codes)
        parser.read_times = self.timed
        length = self.args.max_length
        pre = Family(parser, length, task=False, spill=spills[0]) if self.pretraining else None
        task = Family(parser, length, task=True, spill=spills[1], label_times=self.label_times,
                      cut_at_time=self.timed) if self.labels is not None else None
        return Intake(parser, pre, task, self.labels, self.args, rejects=rejects,
                      on_error=on_error or self.args.on_error,
                      split_of=self.splits.split_of if self.splits is not None else None,
                      span_files=self.source.subjects_span_files)


class Intake:
    def __init__(self, parser: RecordParser, pre, task, labels: dict | None, args: ConvertArgs, *, rejects,
                 on_error: str, split_of=None, span_files: bool = False):
        """`rejects`: the rejects file (lines are written) or a list (a worker's: tuples are kept).
        `span_files`: a subject may have rows in several files (MEDS shards); see `split_subjects`."""
        self.parser, self.pre, self.task, self.labels = parser, pre, task, labels
        self.seed, self.train_ratio, self.input = args.seed, args.train_ratio, args.input
        self.on_error, self.rej = on_error, rejects
        # patient_id -> split index, or -1 to leave the patient out of every split (MEDS subject splits);
        # None: the seeded hash of the patient id
        self.split_of = split_of
        self.n_unsplit = 0
        self.unsplit: set[str] = set()   # ids of those patients (their label rows are "in no split")
        self.seen: set[str] = set()
        self.empty: set[str] = set()   # ids of records rejected only for having no events (see workers.py)
        # a subject met again in a later file (span_files): one subject, so not a second record nor a reject;
        # the rows of its first file are its patient, and these ids are counted and reported
        self.span_files = span_files
        self.split_subjects: set[str] = set()
        self.reasons: Counter = Counter()
        self.n_records = self.n_unlabelled = 0

    # -- per record (the reference path) ---------------------------------------------------------
    def check(self, obj) -> Parsed | None:
        """Parse one record; None (after writing the reject, or raising with --on-error fail) if bad."""
        # the rows of a subject that an earlier file began (span_files): not a record, counted apart
        again = self.span_files and isinstance(obj, dict) and self._read_before(obj.get("patient_id"))
        self.n_records += 1
        try:
            p = self.parser.parse(obj)   # first, as for any record: its new tokens are made in input order
            if again:
                raise Reject("rows of a subject read from an earlier file")
            if p.patient_id in self.seen:
                raise Reject(f"duplicate patient_id {p.patient_id!r} (the first record is kept)")
            if not p.days:
                self.empty.add(p.patient_id)
                raise Reject("no diagnoses, prescriptions or procedures")
        except Reject as r:
            pid = obj.get("patient_id") if isinstance(obj, dict) else None
            pid = pid if isinstance(pid, (str, int)) else None
            if again:
                self.n_records -= 1
                self.split_subjects.add(str(pid))
                return None
            if self.on_error == "fail":
                raise UserError(fail_message(self.input, self.n_records, pid, str(r))) from None
            self.reasons[reason_kind(str(r))] += 1
            if isinstance(self.rej, list):   # a worker keeps them; the main process numbers and writes them
                self.rej.append((self.n_records, pid, str(r)))
            else:
                self.rej.write(reject_line(self.n_records, pid, str(r)))
            return None
        self.seen.add(p.patient_id)
        return p

    def _read_before(self, pid) -> bool:
        """Whether subject `pid` came in an earlier file (converted, or rejected for having no events)."""
        return isinstance(pid, (str, int)) and not isinstance(pid, bool) and (str(pid) in self.seen or
                                                                             str(pid) in self.empty)

    def record(self, obj) -> None:
        p = self.check(obj)
        if p is None:
            return
        if self.split_of is None:
            s = split_index(p.patient_id, self.seed, self.train_ratio)
        else:
            s = self.split_of(p.patient_id)
            if s < 0:
                self.n_unsplit += 1
                self.unsplit.add(p.patient_id)
                return
        if self.pre is not None:
            self.pre.add(p, s)
        if self.labels is not None:
            samples = self.labels.get(p.patient_id)
            if samples is None:
                self.n_unlabelled += 1
            else:
                for label, day, time in samples:   # one task row per prediction time
                    self.task.add(p, s, label, day, time)

    # -- a columnar block ------------------------------------------------------------------------
    def block(self, fb: FastBlock, record_of) -> None:
        """Records of a FastBlock (or MedsBlock) in order: fast ones by arrays, flagged ones through `check`
        (`record_of(i)` gives record i as the per-record path reads it). New tokens are created in the
        order the per-record path would create them."""
        n, parser, seen, pids = fb.n, self.parser, self.seen, fb.pids
        pending, k = fb.new_tokens(), 0
        fast = np.zeros(n, dtype=bool)
        split = np.zeros(n, dtype=np.int8)
        labelled = np.zeros(n, dtype=bool)
        label = np.zeros(n, dtype=np.int64)
        cut = np.full(n, NO_CUT, dtype=np.int32)
        ptime = np.full(n, NO_TIME, dtype=np.int64)
        more: dict[int, list] = {}   # patient -> its task rows after the first (several prediction times)
        slow_rows: list[tuple[int, Parsed]] = []
        labels, seed, ratio, split_of = self.labels, self.seed, self.train_ratio, self.split_of
        left_out = np.zeros(n, dtype=bool)
        flagged = fb.slow.tolist()
        for i in range(n):
            pid = pids[i]
            if flagged[i] or pid in seen or (self.span_files and pid in self.empty):
                while k < len(pending) and pending[k][0] < i:
                    parser.token(pending[k][3], pending[k][4])
                    k += 1
                p = self.check(record_of(i))
                if p is None:
                    continue
                slow_rows.append((i, p))
                pid = p.patient_id
            else:
                self.n_records += 1
                seen.add(pid)
                fast[i] = True
            if split_of is None:
                split[i] = split_index(pid, seed, ratio)
            else:
                split[i] = split_of(pid)
                if split[i] < 0:   # outside the MEDS splits: counted, left out of every split
                    self.n_unsplit += 1
                    self.unsplit.add(pid)
                    left_out[i] = True
                    continue
            if labels is not None:
                samples = labels.get(pid)
                if samples is None:
                    self.n_unlabelled += 1
                else:
                    lab = samples[0]
                    labelled[i], label[i] = True, lab[0]
                    if lab[1] is not None:
                        cut[i] = lab[1]
                    if lab[2] is not None:
                        ptime[i] = lab[2]
                    if len(samples) > 1:
                        more[i] = samples
        for _, _, _, system, code in pending[k:]:
            parser.token(system, code)
        batch = self._batch(fb, fast, slow_rows, split, label, cut)
        if labels is not None and (ptime != NO_TIME).any():
            batch["ptime"] = ptime
        keep = fast.copy()
        keep[[i for i, _ in slow_rows]] = True
        keep &= ~left_out
        batch = select(batch, keep)
        if self.pre is not None and batch["n"]:
            self.pre.add_batch(batch)
        if labels is not None:
            sub = select(batch, labelled[keep]) if not more else self._task_rows(batch, keep, labelled, more)
            if sub["n"]:
                self.task.add_batch(sub)

    @staticmethod
    def _task_rows(batch: dict, keep: np.ndarray, labelled: np.ndarray, more: dict[int, list]) -> dict:
        """The task rows of a block where some patients have several prediction times: each labelled patient
        once per prediction time, in patient order (as `record` adds them), with that row's label and cut."""
        src, label, cut, ptime = [], [], [], []
        for j, i in enumerate(np.flatnonzero(keep).tolist()):
            if not labelled[i]:
                continue
            for lab, day, time in more.get(i, [(None, None, None)]):
                src.append(j)
                if lab is None:   # one prediction time: the batch has its label and cut already
                    label.append(batch["label"][j])
                    cut.append(batch["cut"][j])
                    ptime.append(batch["ptime"][j] if "ptime" in batch else NO_TIME)
                else:
                    label.append(lab)
                    cut.append(NO_CUT if day is None else day)
                    ptime.append(NO_TIME if time is None else time)
        sub = take(batch, np.array(src, dtype=np.int64))
        sub["label"] = np.array(label, dtype=np.int64)
        sub["cut"] = np.array(cut, dtype=np.int32)
        sub["ptime"] = np.array(ptime, dtype=np.int64)
        return sub

    def _batch(self, fb: FastBlock, fast, slow_rows, split, label, cut) -> dict:
        """All n records of the block as one batch (rejected ones carry no events; `select` drops them)."""
        ev = fast[fb.ev_pat]
        st = fast[fb.los_pat]
        tok = fb.event_tokens(self.parser)
        ev_pat, ev_day, ev_tok = fb.ev_pat[ev], fb.ev_day[ev], tok[ev]
        fast_time = getattr(fb, "ev_time", None)   # MedsBlock, when the labels have prediction times
        timed = fast_time is not None or any(p.times is not None for _, p in slow_rows)
        if timed:
            ev_time = fast_time[ev] if fast_time is not None else np.full(len(ev_pat), NO_TIME, dtype=np.int64)
        los_pat, los_days, los_start = fb.los_pat[st], fb.los_days[st], fb.los_start[st]
        sex, birth, pids = fb.sex.copy(), fb.birth.copy(), list(fb.pids)
        if slow_rows:
            for i, p in slow_rows:
                sex[i], birth[i], pids[i] = p.sex, p.birth_day, p.patient_id
            idx = np.array([i for i, _ in slow_rows], dtype=np.int64)
            counts = np.array([len(p.days) for _, p in slow_rows], dtype=np.int64)
            stays = np.array([len(p.stays) for _, p in slow_rows], dtype=np.int64)
            ev_pat = np.concatenate([ev_pat, np.repeat(idx, counts)])
            ev_day = np.concatenate([ev_day, np.array([d for _, p in slow_rows for d in p.days], dtype=np.int32)])
            ev_tok = np.concatenate([ev_tok, np.array([t for _, p in slow_rows for t in p.toks], dtype=np.int32)])
            if timed:
                ev_time = np.concatenate([ev_time, event_times([p for _, p in slow_rows])])
            los_pat = np.concatenate([los_pat, np.repeat(idx, stays)])
            los_days = np.concatenate([los_days, np.array([d for _, p in slow_rows for d in p.stays], dtype=np.int16)])
            los_start = np.concatenate([los_start, np.array([a for _, p in slow_rows for a in p.stay_starts],
                                                            dtype=np.int32)])
            order = np.argsort(los_pat, kind="stable")      # stays stay patient-major
            los_pat, los_days, los_start = los_pat[order], los_days[order], los_start[order]
        out = {"n": fb.n, "split": split, "pids": pids, "sex": sex, "birth": birth, "label": label, "cut": cut,
               "ev_pat": ev_pat, "ev_day": ev_day, "ev_tok": ev_tok, "los_pat": los_pat, "los_days": los_days,
               "los_start": los_start}
        if timed:
            out["ev_time"] = ev_time
        return out
