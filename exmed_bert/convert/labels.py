"""Task labels: the CSV `patient_id,label[,prediction_date]` read into {patient_id: (label, day)}."""

from __future__ import annotations

import csv
from pathlib import Path

from exmed_bert.convert.validate import parse_day
from exmed_bert.errors import UserError


def read_task_csv(path: str | Path) -> dict[str, tuple[int, int | None]]:
    """{patient_id: (label, prediction day or None)}; any malformed row is a UserError naming its line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: task data file not found (expected a CSV patient_id,label[,prediction_date])")
    out: dict[str, tuple[int, int | None]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            if "patient_id" not in fields or "label" not in fields:
                raise UserError(f"{path}: line 1: the header must name patient_id and label "
                                f"(and optionally prediction_date); got {', '.join(fields) or 'nothing'}")
            reader.fieldnames = fields
            for row in reader:
                line = reader.line_num
                pid = (row.get("patient_id") or "").strip()
                if not pid:
                    raise UserError(f"{path}: line {line}: empty patient_id")
                raw = (row.get("label") or "").strip()
                try:
                    value = float(raw)
                    if not value.is_integer():
                        raise ValueError
                    label = int(value)
                except ValueError:
                    raise UserError(f"{path}: line {line}: label must be an integer class, got {raw!r}") from None
                when = (row.get("prediction_date") or "").strip()
                try:
                    day = parse_day(when) if when else None
                except ValueError:
                    raise UserError(f"{path}: line {line}: bad prediction_date {when!r} (use YYYY-MM-DD)") from None
                if pid in out:
                    raise UserError(f"{path}: line {line}: patient_id {pid!r} appears twice")
                out[pid] = (label, day)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; re-save the file as UTF-8") from None
    except csv.Error as e:
        raise UserError(f"{path}: not a readable CSV ({e})") from None
    if not out:
        raise UserError(f"{path}: no labelled patients in the task file")
    return out
