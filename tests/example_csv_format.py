"""An input format in one module: a CSV of events `patient_id,date,code[,system]`, a patient's rows together,
codes of ICD-10-CM unless `system` names another. Registered with one line in
`exmed_bert.convert.formats.FORMATS` (tests/test_input_formats.py adds it there), it is converted like
JSONL and MEDS: its pieces go to `--workers`, and each piece takes the columnar fast path
(`fastpath.fast_block` -> `Intake.block`; events with a `system` take the per-record path there).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from exmed_bert.convert.fastpath import fast_block
from exmed_bert.convert.formats.base import Source
from exmed_bert.errors import UserError

EVENT = pa.struct([("code", pa.string()), ("date", pa.string()), ("system", pa.string())])
SCHEMA = pa.schema([("patient_id", pa.string()), ("diagnoses", pa.list_(EVENT))])


class CsvSource(Source):
    patients_per_piece = 25

    @staticmethod
    def claims(path: Path) -> bool:
        return path.suffix.lower() == ".csv"

    def size(self) -> int:
        return self.path.stat().st_size

    def pieces(self, workers: int) -> list[list[dict]]:
        pts = list(self.records())
        return [pts[i:i + self.patients_per_piece] for i in range(0, len(pts), self.patients_per_piece)]

    def feed(self, run, piece: list[dict]) -> None:
        fb = fast_block(pa.Table.from_pylist(piece, schema=SCHEMA), run.parser)
        if fb is None:
            for p in piece:
                run.record(p)
        else:
            run.block(fb, piece.__getitem__)

    def records(self) -> Iterator[dict]:
        if not self.path.is_file():
            raise UserError(f"{self.path}: input not found")
        with open(self.path, newline="", encoding="utf-8") as f:
            patient: dict | None = None
            for row in csv.DictReader(f):
                if patient is None or patient["patient_id"] != row["patient_id"]:
                    if patient is not None:
                        yield patient
                    patient = {"patient_id": row["patient_id"], "diagnoses": []}
                event = {"code": row["code"], "date": row["date"]}
                if row.get("system"):
                    event["system"] = row["system"]
                patient["diagnoses"].append(event)
            if patient is not None:
                yield patient
