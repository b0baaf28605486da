"""Task labels: the CSV `patient_id,label[,prediction_date]` or MEDS label files (Parquet: subject_id,
prediction_time and one of boolean_value / integer_value / categorical_value), every row accepted or rejected
with its reason.

A task CSV has one row per patient; MEDS labels may have several per subject, one per prediction time
(each becomes a row of the task datasets, `sample_key`).

Bad rows (non-integer or out-of-range label, bad date, duplicate id) are either a counted skip written to
`task_rejected.csv` (`on_error="skip"`) or one error naming file and line (`on_error="fail"`). A file
that is not task data at all is always an error. The accepted rows reach the conversion in memory
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

import numpy as np

from exmed_bert.convert.validate import parse_day
from exmed_bert.data.layout import US_PER_DAY
from exmed_bert.errors import UserError
from exmed_bert.io import atomic_write, file_fingerprint

REJECTS_NAME = "task_rejected.csv"
MAX_ID_CHARS = 200


@dataclass
class TaskRow:
    patient_id: str
    label: int
    prediction_day: int | None  # days since 1970-01-01; None = the whole history
    line: int  # CSV line, or 1-based row of a MEDS label file (over its files in sorted order)
    prediction_time: int | None = None  # MEDS: microseconds since 1970-01-01 (UTC when tz-aware)

    @property
    def key(self) -> str:
        return sample_key(self.patient_id, self.prediction_time)


def sample_key(patient_id: str, prediction_time: int | None = None) -> str:
    """A task row's key: the patient id (a task CSV: one row per patient), with "@<prediction time in
    microseconds>" for MEDS labels (a subject may have several prediction times)."""
    return patient_id if prediction_time is None else f"{patient_id}@{int(prediction_time)}"


# a task manifest's "cut", for labels with prediction times. MEDS input (events have times): data up to and
# including prediction_time, as meds.LabelSchema reads a label; JSON input (dates only): the days before the
# prediction day. A task dataset built under another rule (an older "before prediction_time") is rebuilt.
CUT_AT_TIME, CUT_AT_DAY = "at or before prediction_time", "before the day of prediction_time"


def cut_rule(table: "TaskTable", event_times: bool) -> str | None:
    """The task manifest's "cut" for a conversion of `table` from an input whose events carry times (MEDS)
    or not (None: labels by date, the prediction date exclusive, as always). A task dataset is reused only
    when its manifest says the same."""
    if not table.timed:
        return None
    return CUT_AT_TIME if event_times else CUT_AT_DAY


def dataset_keys(data: dict, patient_ids: list[str]) -> list[str]:
    """`sample_key` of every row of a task dataset (its prediction_times, when it has them)."""
    if "prediction_times" not in data:
        return list(patient_ids)
    return [sample_key(p, t) for p, t in zip(patient_ids, data["prediction_times"].tolist())]


@dataclass
class TaskTable:
    """Valid rows by `sample_key` (the patient id for a task CSV), plus every rejected row with its reason."""

    path: Path
    num_labels: int | None  # None: any integer label (the converter's view); else 0..num_labels-1
    on_error: str = "skip"
    skip_hint: str = "pass --on-task-error skip to skip bad rows into task_rejected.csv"
    rows: dict[str, TaskRow] = field(default_factory=dict)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, patient_id, reason)
    kinds: Counter = field(default_factory=Counter)  # short reason -> count, for the summary line
    fingerprint: str = ""  # of the file and of what was accepted from it (set by read_task_csv)
    unit: str = "line"  # how a rejected row is named: CSV "line", MEDS "row"
    classes: list[str] | None = None  # MEDS categorical_value labels: class id -> category (sorted)
    label_column: str | None = None  # MEDS: the value column the labels came from

    def reject(self, line: int, patient_id: str, reason: str, kind: str) -> None:
        if self.on_error == "fail":
            raise UserError(f"{self.path}: {self.unit} {line}: {reason} (fix the row"
                            + (f", or {self.skip_hint})" if self.skip_hint else ")"))
        self.rejected.append((line, patient_id, reason))
        self.kinds[kind] += 1

    def labels(self) -> dict[str, int]:
        """{sample_key: label}."""
        return {key: r.label for key, r in self.rows.items()}

    def by_patient(self) -> dict[str, list[tuple[int, int | None, int | None]]]:
        """{patient_id: [(label, prediction day or None, prediction time or None), ...]}: what the conversion
        cuts and labels by, one entry per task row of the patient (MEDS labels: in prediction-time order;
        times in microseconds since 1970)."""
        out: dict[str, list] = {}
        for r in sorted(self.rows.values(), key=lambda r: (r.prediction_time or 0, r.line)):
            out.setdefault(r.patient_id, []).append((r.label, r.prediction_day, r.prediction_time))
        return out

    @property
    def timed(self) -> bool:
        """Rows carry a prediction time (MEDS labels): the task split keeps events of the prediction day
        at or before it."""
        return any(r.prediction_time is not None for r in self.rows.values())


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


def is_meds_labels(path: str | os.PathLike) -> bool:
    """MEDS label data: a .parquet file or a folder (of .parquet files); anything else is a task CSV."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() == ".parquet"


def read_task_csv(path: str | os.PathLike, num_labels: int | None = None, on_error: str = "fail",
                  skip_hint: str | None = TaskTable.skip_hint) -> TaskTable:
    """Read and validate task data (`--task-data`): a task CSV, or MEDS labels (is_meds_labels). Raises
    UserError if the file itself is unusable, or on the first bad row with `on_error="fail"` (its message
    ends with `skip_hint`, how to skip such rows instead)."""
    if is_meds_labels(path):
        table = read_meds_labels(path, num_labels, on_error, skip_hint)
    else:
        table = _read_csv(path, num_labels, on_error, skip_hint)
    # the file's own fingerprint when every row was taken (what a conversion of the file records), else
    # one that also says which rows were left out (a different --num-labels takes different rows)
    table.fingerprint = file_fingerprint(table.path)
    if table.rejected:
        skipped = ",".join(str(line) for line, _, _ in sorted(table.rejected))
        table.fingerprint = hashlib.sha256(f"{table.fingerprint}|skipped:{skipped}".encode()).hexdigest()
    return table


def _no_rows(table: TaskTable) -> UserError:
    first = table.rejected[0] if table.rejected else None
    return UserError(f"{table.path}: no valid rows" + (f" ({len(table.rejected)} rejected, first: {table.unit} "
                                                      f"{first[0]}: {first[2]})" if first else ""))


def _read_csv(path, num_labels, on_error, skip_hint) -> TaskTable:
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
        raise _no_rows(table)
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


MEDS_LABEL_COLUMNS = ("boolean_value", "integer_value", "categorical_value")  # in the order they are looked for


def _meds_files(path: Path) -> list[Path]:
    if not path.exists():
        raise UserError(f"{path}: MEDS label data not found (pass --task-data with a MEDS label .parquet file "
                        "or a folder of them, or a task CSV)")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path}: no .parquet files in the folder; pass a MEDS label file or a folder of them")
    return files


def _meds_columns(f: Path) -> tuple[dict, str | None, bool]:
    """Check one label file's schema -> ({column: pyarrow array}, the value column with values, float_only)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from exmed_bert.convert import arrow
    from exmed_bert.convert.meds_names import current

    try:
        t = current(arrow.read_parquet(f))   # older MEDS labels name subject_id patient_id
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{f}: not a readable Parquet file ({str(e).splitlines()[0][:200]})") from None
    for name in ("subject_id", "prediction_time"):
        if name not in t.column_names:
            raise UserError(f"{f}: no column {name}; MEDS label files have subject_id, prediction_time and one of "
                            f"{', '.join(MEDS_LABEL_COLUMNS)} (got {', '.join(t.column_names)[:200]})")
    sid, when = t["subject_id"], t["prediction_time"]
    if pa.types.is_string(sid.type) or pa.types.is_large_string(sid.type):
        raise UserError(f"{f}: subject_id is string; MEDS subject ids are int64: number the subjects (the same "
                        "ids in the data and the labels) and keep the map to read the predictions back")
    if not pa.types.is_integer(sid.type):
        raise UserError(f"{f}: column subject_id is {sid.type}; MEDS subject ids are int64")
    if not pa.types.is_timestamp(when.type):
        raise UserError(f"{f}: column prediction_time is {when.type}; MEDS wants a timestamp (timestamp[us])")
    cols = {"subject_id": sid.cast(pa.string()),
            # tz-aware -> UTC instants, naive -> wall time, as the event times are read
            "prediction_time": pc.cast(when, pa.timestamp("us", when.type.tz), safe=False).cast(pa.int64())}
    filled = [c for c in MEDS_LABEL_COLUMNS if c in t.column_names and t[c].null_count < len(t)]
    if len(filled) > 1:
        raise UserError(f"{f}: columns {' and '.join(filled)} both have values; keep one label column per task")
    if not filled:
        float_only = "float_value" in t.column_names and t["float_value"].null_count < len(t)
        return cols, None, float_only
    col = filled[0]
    v = t[col]
    want = {"boolean_value": pa.types.is_boolean, "integer_value": pa.types.is_integer,
            "categorical_value": lambda ty: pa.types.is_string(ty) or pa.types.is_large_string(ty)
            or pa.types.is_dictionary(ty)}[col]
    if not want(v.type):
        kind = {"boolean_value": "bool", "integer_value": "an integer", "categorical_value": "a string"}[col]
        raise UserError(f"{f}: column {col} is {v.type}; MEDS wants {kind}")
    cols[col] = v.cast(pa.string()) if col == "categorical_value" else v
    return cols, col, False


def read_meds_labels(path: str | os.PathLike, num_labels: int | None = None, on_error: str = "fail",
                     skip_hint: str | None = TaskTable.skip_hint) -> TaskTable:
    """MEDS label data (one .parquet file, or a folder of them) as a TaskTable.

    The label comes from the one value column with values: boolean_value (False/True -> 0/1), integer_value
    (as is), or categorical_value (the categories sorted, class id = position; `table.classes`). The
    conversion keeps events at or before prediction_time: those of earlier days, and those of its day whose
    time is known to be at or before it (nothing after it reaches the task split; `family._before_times`). A subject may
    have several rows (prediction times): each is a task row; a second row with the same subject and
    prediction_time is a bad row.
    """
    path = Path(path)
    table = TaskTable(path=path, num_labels=num_labels, on_error=on_error, skip_hint=skip_hint, unit="row")
    parts, cols_seen, float_only = [], set(), False
    for f in _meds_files(path):
        cols, col, floats = _meds_columns(f)
        parts.append((cols, col))
        if col:
            cols_seen.add(col)
        float_only |= floats
    if len(cols_seen) > 1:
        raise UserError(f"{path}: the files use different label columns ({', '.join(sorted(cols_seen))}); "
                        "keep one label column per task")
    if not cols_seen:
        raise UserError(f"{path}: " + ("only float_value has values; regression labels are not supported, "
                                       "ExMed-BERT needs boolean_value, integer_value or categorical_value"
                                       if float_only else f"no label values: none of {', '.join(MEDS_LABEL_COLUMNS)} "
                                       "has a value"))
    col = table.label_column = cols_seen.pop()
    ids = [x for cols, _ in parts for x in cols["subject_id"].to_pylist()]
    times = [x for cols, _ in parts for x in cols["prediction_time"].to_pylist()]
    values = [x for cols, c in parts for x in (cols[c].to_pylist() if c else [None] * len(cols["subject_id"]))]
    if col == "categorical_value":
        table.classes = sorted({v for v in values if v is not None})
        class_id = {c: i for i, c in enumerate(table.classes)}
    for row, (pid, when, value) in enumerate(zip(ids, times, values), start=1):
        if pid is None or not pid.strip():
            table.reject(row, "", "missing subject_id", "missing patient_id")
        elif when is None:
            table.reject(row, pid, "missing prediction_time", "missing prediction_time")
        elif value is None:
            table.reject(row, pid, f"missing {col}", "missing label")
        else:
            label = class_id[value] if col == "categorical_value" else int(value)
            if num_labels is not None and not 0 <= label < num_labels:
                table.reject(row, pid, f"{col} {value!r} (class {label}) out of range 0..{num_labels - 1} for "
                             f"--num-labels {num_labels}", "label out of range")
                continue
            day = int(np.floor_divide(when, US_PER_DAY))
            r = TaskRow(pid, label, day, row, prediction_time=int(when))
            if r.key in table.rows:
                table.reject(row, pid, f"duplicate prediction_time for this subject (first on row "
                             f"{table.rows[r.key].line})", "duplicate prediction_time")
                continue
            table.rows[r.key] = r
    if not table.rows:
        raise _no_rows(table)
    return table


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
