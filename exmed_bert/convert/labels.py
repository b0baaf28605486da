"""Task labels: the CSV `patient_id,label[,prediction_date]`, every row accepted or rejected with its reason.

Bad rows (non-integer or out-of-range label, bad date, duplicate id) are either a counted skip written to
`task_rejected.csv` (`on_error="skip"`) or one error naming file and line (`on_error="fail"`). A file
that is not a task CSV at all is always an error. The accepted rows reach the conversion in memory
(`TaskTable.by_patient`), so what was skipped is never re-read.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from exmed_bert.convert.validate import parse_day
from exmed_bert.errors import UserError
from exmed_bert.io import atomic_write, file_fingerprint

REJECTS_NAME = "task_rejected.csv"
MAX_ID_CHARS = 200


@dataclass
class TaskRow:
    patient_id: str
    label: int
    prediction_day: int | None  # days since 1970-01-01; None = the whole history
    line: int


@dataclass
class TaskTable:
    """Valid rows by patient id, plus every rejected row with its reason."""

    path: Path
    num_labels: int | None  # None: any integer label (the converter's view); else 0..num_labels-1
    on_error: str = "skip"
    skip_hint: str = "pass --on-task-error skip to skip bad rows into task_rejected.csv"
    rows: dict[str, TaskRow] = field(default_factory=dict)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, patient_id, reason)
    kinds: Counter = field(default_factory=Counter)  # short reason -> count, for the summary line
    fingerprint: str = ""  # of the file and of what was accepted from it (set by read_task_csv)

    def reject(self, line: int, patient_id: str, reason: str, kind: str) -> None:
        if self.on_error == "fail":
            raise UserError(f"{self.path}: line {line}: {reason} (fix the row"
                            + (f", or {self.skip_hint})" if self.skip_hint else ")"))
        self.rejected.append((line, patient_id, reason))
        self.kinds[kind] += 1

    def labels(self) -> dict[str, int]:
        return {pid: r.label for pid, r in self.rows.items()}

    def by_patient(self) -> dict[str, tuple[int, int | None]]:
        """{patient_id: (label, prediction day or None)}: what the conversion cuts and labels by."""
        return {pid: (r.label, r.prediction_day) for pid, r in self.rows.items()}


def _parse_label(raw: str, num_labels: int | None) -> tuple[int | None, str | None, str | None]:
    """-> (label, reason, kind); label is None when the value is rejected."""
    s = raw.strip()
    try:
        value = int(s)
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            f = float("nan")
        if not f.is_integer():
            return None, f"label {raw[:40]!r} is not an integer", "non-integer label"
        value = int(f)
    if num_labels is not None and not 0 <= value < num_labels:
        return (None, f"label {value} out of range 0..{num_labels - 1} for --num-labels {num_labels}",
                "label out of range")
    return value, None, None


def read_task_csv(path: str | os.PathLike, num_labels: int | None = None, on_error: str = "fail",
                  skip_hint: str | None = TaskTable.skip_hint) -> TaskTable:
    """Read and validate a task CSV. Raises UserError if the file itself is unusable, or on the first bad
    row with `on_error="fail"` (its message ends with `skip_hint`, how to skip such rows instead)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: task CSV not found (pass --task-data with a CSV of "
                        "patient_id,label[,prediction_date])")
    table = TaskTable(path=path, num_labels=num_labels, on_error=on_error, skip_hint=skip_hint)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise UserError(f"{path}: empty file; expected a header line patient_id,label[,prediction_date]")
            cols = [h.strip().lower() for h in header]
            missing = [c for c in ("patient_id", "label") if c not in cols]
            if missing:
                raise UserError(f"{path}: line 1: missing column(s) {', '.join(missing)}; expected a header "
                                f"patient_id,label[,prediction_date], got {','.join(header)[:200]!r}")
            i_id, i_label = cols.index("patient_id"), cols.index("label")
            i_date = cols.index("prediction_date") if "prediction_date" in cols else None
            for line, rec in enumerate(reader, start=2):
                if not rec or all(not c.strip() for c in rec):
                    continue
                _read_row(table, rec, line, i_id, i_label, i_date)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); save the task CSV as UTF-8") from None
    except csv.Error as e:
        raise UserError(f"{path}: not a readable CSV: {e}") from None
    if not table.rows:
        raise UserError(f"{path}: no valid rows" + (f" ({len(table.rejected)} rejected, first: line "
                                                   f"{table.rejected[0][0]}: {table.rejected[0][2]})"
                                                   if table.rejected else ""))
    # the file's own fingerprint when every row was taken (what a conversion of the file records), else
    # one that also says which rows were left out (a different --num-labels takes different rows)
    table.fingerprint = file_fingerprint(path)
    if table.rejected:
        skipped = ",".join(str(line) for line, _, _ in sorted(table.rejected))
        table.fingerprint = hashlib.sha256(f"{table.fingerprint}|skipped:{skipped}".encode()).hexdigest()
    return table


def _read_row(table: TaskTable, rec: list[str], line: int, i_id: int, i_label: int, i_date: int | None) -> None:
    pid = rec[i_id].strip() if len(rec) > i_id else ""
    if len(rec) <= max(i_id, i_label):
        return table.reject(line, pid, f"only {len(rec)} field(s); expected patient_id,label[,prediction_date]",
                            "too few fields")
    if not pid:
        return table.reject(line, "", "missing patient_id", "missing patient_id")
    if len(pid) > MAX_ID_CHARS:
        return table.reject(line, pid[:40] + "...", f"patient_id longer than {MAX_ID_CHARS} characters",
                            "patient_id too long")
    label, why, kind = _parse_label(rec[i_label], table.num_labels)
    if why:
        return table.reject(line, pid, why, kind)
    day = None
    when = rec[i_date].strip() if i_date is not None and len(rec) > i_date else ""
    if when:
        try:
            day = parse_day(when)
        except ValueError:
            return table.reject(line, pid, f"prediction_date {when[:40]!r} is not a YYYY-MM-DD date",
                                "bad prediction_date")
    if pid in table.rows:
        return table.reject(line, pid, f"duplicate patient_id (first on line {table.rows[pid].line})",
                            "duplicate patient_id")
    table.rows[pid] = TaskRow(pid, label, day, line)


def write_rejects(table: TaskTable, output_dir: str | os.PathLike) -> Path | None:
    """Write task_rejected.csv (line,patient_id,reason) and print a one-line summary; None if clean."""
    if not table.rejected:
        return None
    path = Path(output_dir) / REJECTS_NAME
    with atomic_write(path) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["line", "patient_id", "reason"])
        w.writerows(sorted(table.rejected))
    counts = ", ".join(f"{n} {kind}" for kind, n in table.kinds.most_common())
    total = len(table.rows) + len(table.rejected)
    print(f"task data: skipped {len(table.rejected)} of {total} rows of {table.path} ({counts}); see {path}",
          file=sys.stderr)
    return path
