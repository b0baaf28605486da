"""MEDS input: a folder of Parquet files (subject_id, time, code) -> patient dicts in the JSON schema.

Recognised codes: ICD10CM//, ICD9CM//, ATC//, RXNORM//, CPT//, PHECODE//, MEDS_BIRTH, GENDER//F|M,
and HOSPITAL_ADMISSION / HOSPITAL_DISCHARGE (paired in time order into stays). Every other code is
ignored and counted in `MedsReader.ignored`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

from exmed_bert.errors import UserError

PREFIXES = {"ICD10CM": ("diagnoses", "icd10cm"), "ICD9CM": ("diagnoses", "icd9cm"),
            "PHECODE": ("diagnoses", "phecode"), "ATC": ("prescriptions", "atc"),
            "RXNORM": ("prescriptions", "rxnorm"), "CPT": ("procedures", "cpt")}
REQUIRED_COLUMNS = ("subject_id", "time", "code")


class MedsReader:
    """Iterate a MEDS folder as patients. A subject must not span files (MEDS shards by subject)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.files = sorted(p for p in self.folder.rglob("*.parquet") if p.is_file())
        if not self.files:
            raise UserError(f"{self.folder}: no .parquet files found; a MEDS input is a folder of Parquet "
                            "files with subject_id, time and code columns")
        self.ignored: Counter = Counter()

    def __iter__(self) -> Iterator[dict]:
        for path in self.files:
            yield from self._read_file(path)

    def _read_file(self, path: Path) -> Iterator[dict]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=list(REQUIRED_COLUMNS))
        except (pa.ArrowInvalid, OSError, KeyError) as e:
            raise UserError(f"{path}: not a MEDS Parquet file with columns {', '.join(REQUIRED_COLUMNS)} "
                            f"({str(e).splitlines()[0]})") from None
        if table.num_rows == 0:
            return
        table = table.sort_by([("subject_id", "ascending"), ("time", "ascending")])
        time = table["time"]
        if pa.types.is_timestamp(time.type) or pa.types.is_date(time.type):
            dates = pc.strftime(time, format="%Y-%m-%d").to_pylist()
        else:
            dates = [None if t is None else str(t) for t in time.to_pylist()]
        subjects = table["subject_id"].to_pylist()
        codes = table["code"].to_pylist()
        start = 0
        for i in range(1, len(subjects) + 1):
            if i == len(subjects) or subjects[i] != subjects[start]:
                yield self._patient(subjects[start], dates[start:i], codes[start:i])
                start = i

    def _patient(self, subject, dates: list, codes: list) -> dict:
        p: dict = {"patient_id": subject, "diagnoses": [], "prescriptions": [], "procedures": [],
                   "hospitalizations": []}
        admissions: list = []
        for date, code in zip(dates, codes):
            if code is None:
                self.ignored["<null code>"] += 1
                continue
            prefix, sep, value = code.partition("//")
            target = PREFIXES.get(prefix.upper()) if sep else None
            if target is not None:
                p[target[0]].append({"code": value, "date": date, "system": target[1]})
            elif code == "MEDS_BIRTH":
                p["birth_date"] = date
            elif prefix.upper() == "GENDER" and sep:
                p["sex"] = value[:1].upper() if value[:1].upper() in ("F", "M") else None
            elif prefix.upper() == "HOSPITAL_ADMISSION":
                admissions.append(date)
            elif prefix.upper() == "HOSPITAL_DISCHARGE" and admissions:
                p["hospitalizations"].append({"admission_date": admissions.pop(0), "discharge_date": date})
            else:
                self.ignored[prefix if sep else code] += 1
        return p
