"""Streaming, atomic output: patients as JSON (`{"patients": [...], "metadata": {...}}`) or JSONL (one
patient per line, metadata in `<stem>.metadata.json`), the task CSV, and each patient's true risk in
`<task stem>_risk.csv` beside it (for the evaluation's oracle only; no model reads it). Patients are
serialised from pre-built string pieces (code prefix + date), several times faster than json.dumps per event.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from exmed_bert.data.layout import risk_path
from exmed_bert.io import atomic_write, write_json
from exmed_bert.synthetic.generator import Chunk
from exmed_bert.synthetic.tables import CodeTables


def iso_dates(first_day: int, count: int) -> list[str]:
    """ISO strings for `count` consecutive days from `first_day` (days since 1970-01-01)."""
    return np.arange(first_day, first_day + count, dtype=np.int64).astype("datetime64[D]").astype(str).tolist()


RISK_HEADER = "patient_id,true_risk\n"


class ChunkFormatter:
    """Turns simulated chunks into patient JSON lines, task CSV rows and true-risk rows."""

    def __init__(self, tables: CodeTables, window_start: int, span_days: int, num_patients: int):
        self.t = tables
        self.dates = iso_dates(window_start, span_days)          # window offset -> 'YYYY-MM-DD'
        self.closed = [d + '"}' for d in self.dates]              # ... closing an event object
        # ',{"code":"E11.65","date":"' - every event carries a leading comma, dropped once per list.
        self.prefix = ["," + s for s in tables.prefix]
        self.width = len(str(num_patients))                       # P0001 .. P1000 for N = 1000

    def patient_id(self, i: int) -> str:
        return f"P{i:0{self.width}d}"

    def format(self, ch: Chunk, first_index: int) -> tuple[list[str], list[str], list[str]]:
        closed, dates = self.closed, self.dates
        # Interleave code prefixes and dates with C-level map/slicing, then join per patient and kind.
        ev: list = [None] * (2 * len(ch.gid))
        ev[0::2] = map(self.prefix.__getitem__, ch.gid.tolist())
        ev[1::2] = map(closed.__getitem__, ch.day.tolist())
        stays = ['{"admission_date":"' + dates[a] + '","discharge_date":"' + dates[b] + '"}'
                 for a, b in zip(ch.adm.tolist(), ch.dis.tolist())]
        births = ch.birth.astype("datetime64[D]").astype(str).tolist()
        b, sb = (2 * ch.bounds).tolist(), ch.stay_bounds.tolist()
        join = "".join
        sexes = ["F" if f else "M" for f in ch.female.tolist()]
        lines, rows, risks = [], [], []
        for i, (birth, sex, pred, label, prob) in enumerate(zip(births, sexes, ch.pred.tolist(), ch.label.tolist(),
                                                                 ch.prob.tolist())):
            pid = self.patient_id(first_index + i + 1)
            j = 3 * i
            lines.append(
                f'{{"patient_id":"{pid}","birth_date":"{birth}","sex":"{sex}",'
                f'"diagnoses":[{join(ev[b[j]:b[j + 1]])[1:]}],'
                f'"prescriptions":[{join(ev[b[j + 1]:b[j + 2]])[1:]}],'
                f'"procedures":[{join(ev[b[j + 2]:b[j + 3]])[1:]}],'
                f'"hospitalizations":[{",".join(stays[sb[i]:sb[i + 1]])}]}}')
            rows.append(f"{pid},{label},{dates[pred]}\n")
            risks.append(f"{pid},{prob!r}\n")                 # repr: the float64 round-trips exactly
        return lines, rows, risks


class PatientStream(contextlib.AbstractContextManager):
    """Write patients, task rows and true risks incrementally to temp files; `finish(metadata)` completes
    them, then the renames happen on exit. An exception on the way leaves no partial output."""

    def __init__(self, path: str | Path, task_path: str | Path):
        self.path, self.task_path = Path(path), Path(task_path)
        self.risk_path = risk_path(task_path)
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        self._stack = contextlib.ExitStack()
        self._first = True
        self._metadata: dict | None = None

    def __enter__(self) -> "PatientStream":
        self.f = self._stack.enter_context(atomic_write(self.path))
        self.task = self._stack.enter_context(atomic_write(self.task_path))
        self.task.write("patient_id,label,prediction_date\n")
        self.risk = self._stack.enter_context(atomic_write(self.risk_path))
        self.risk.write(RISK_HEADER)
        if not self.jsonl:
            self.f.write('{"patients": [\n')
        return self

    def write(self, lines: list[str], rows: list[str], risks: list[str]) -> None:
        if not lines:
            return
        sep = "\n" if self.jsonl else ",\n"
        self.f.write(("" if self._first else sep) + sep.join(lines))
        self._first = False
        self.task.writelines(rows)
        self.risk.writelines(risks)

    def finish(self, metadata: dict) -> None:
        self._metadata = metadata
        if self.jsonl:
            self.f.write("\n")
        else:
            self.f.write('\n],\n"metadata": ' + json.dumps(metadata, indent=2) + "\n}\n")

    def __exit__(self, *exc) -> bool | None:
        if exc[0] is None and self._metadata is None:
            raise RuntimeError("PatientStream closed without finish(metadata)")
        self._stack.__exit__(*exc)
        if exc[0] is None and self.jsonl:
            write_json(metadata_path(self.path), self._metadata)
        return None


def metadata_path(path: str | Path) -> Path:
    """Where a JSONL file's metadata goes: `<stem>.metadata.json` beside it."""
    path = Path(path)
    return path.with_name(path.stem + ".metadata.json")
