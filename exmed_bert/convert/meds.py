"""MEDS input: a MEDS dataset root, its data/ folder or one Parquet file (subject_id, time, code) ->
patient dicts in the JSON schema, plus the dataset's metadata (dataset.json, subject splits).

Code strings are read by `exmed_bert.convert.meds_codes` (this project's `ICD10CM//E11.65`, MIMIC-IV-MEDS's
`DIAGNOSIS//ICD//10//E1165`, OMOP's `ICD10CM/E11.65`): events, MEDS_BIRTH, GENDER, and
HOSPITAL_ADMISSION / HOSPITAL_DISCHARGE (paired in time order into stays), OMOP inpatient visits
(`Visit/IP` with the optional `end` column: a stay). Every other code is ignored and counted per family
in `MedsReader.ignored`, or with other_codes="keep" read as an event of system "other" (code
"<family>//<rest>", docs/DATASET.md "Other codes"); rows used are counted per family in `MedsReader.kept`. `time` must be a timestamp (or date) column;
timezone-aware times give their UTC date.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exmed_bert.convert import arrow
from exmed_bert.convert.columns import NO_TIME
from exmed_bert.convert.meds_block import MedsBlock, event_times_us
from exmed_bert.convert.meds_codes import EVENT_KINDS, MedsCode, ignored, other_code, parse_meds_code
from exmed_bert.convert.meds_names import as_file, current
from exmed_bert.convert.meds_rows import drop_duplicate_rows, holds_values, place_statics
from exmed_bert.convert.shard_parts import ShardPart, batches, subjects_in
from exmed_bert.convert.value_bins import BIN_SEPARATOR, VALUE_COLUMN, bin_of
from exmed_bert.errors import UserError

REQUIRED_COLUMNS = ("subject_id", "time", "code")   # older MEDS names are read too (meds_names)
END_COLUMN = "end"   # optional: an event's end time (meds_etl's OMOP visits), read for `Visit/IP` stays
FORMS = ("a MEDS input is a dataset root (data/ and metadata/), its data/ folder or one Parquet file, "
         "with subject_id, time and code columns")


def meds_root(path: Path) -> Path | None:
    """The dataset root of `path` (the folder holding data/ and metadata/), or None for a bare folder
    or file. Pointing at data/ finds the root above it."""
    if path.is_dir() and (path / "data").is_dir():
        return path
    if path.is_dir() and path.name == "data" and (path.parent / "metadata").is_dir():
        return path.parent
    return None


def event_files(path: Path) -> list[Path]:
    """The Parquet files holding events: data/**/*.parquet of a root, every *.parquet below another
    folder except a metadata/ folder (codes.parquet and subject_splits.parquet are not events)."""
    if not path.exists():
        raise UserError(f"{path}: input not found; {FORMS}")
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise UserError(f"{path}: not a .parquet file; {FORMS}")
        return [path]
    folder = path / "data" if meds_root(path) == path else path
    files = sorted(p for p in folder.rglob("*.parquet")
                   if p.is_file() and p.relative_to(folder).parts[0] != "metadata")
    if not files:
        raise UserError(f"{folder}: no .parquet files found; {FORMS}")
    return files


class MedsReader:
    """Iterate a MEDS dataset as patients. A subject must not span files (MEDS shards by subject).

    `input`: a root, its data/ folder or one Parquet file (see `meds_root`, `event_files`).
    `dataset_info`: metadata/dataset.json (dataset_name, dataset_version, ...) or None.
    `subject_splits`: metadata/subject_splits.parquet as {str(subject_id): split} or None.
    `ignored`: rows not used, per code family ("LAB", "SNOMED", "ICD10CM (malformed)").
    `kept`: rows used (events, patient facts, stays), per code family ("ICD10CM", "DIAGNOSIS//ICD//10").
    """

    def __init__(self, input: str | os.PathLike, other_codes: str = "drop"):
        self.input = Path(input)
        self.keep_other = other_codes == "keep"   # --other-codes keep: codes of no known system become events
        # --value-bins: {code: quantile edges} (exmed_bert.convert.value_bins); an other code with edges and a
        # finite numeric_value becomes "<code>|q<bin>"; empty = numeric_value is not read
        self.value_edges: dict = {}
        self.root = meds_root(self.input)
        self.files = event_files(self.input)
        self.ignored: Counter = Counter()
        self.kept: Counter = Counter()
        self.duplicates = 0   # rows dropped as identical to another (`meds_rows`; `_patients`, `MedsBlock`)
        self._parsed: dict[str | None, MedsCode] = {}
        # events carry their times (MedsBlock.ev_time, "time" in patient dicts): set for a conversion whose
        # labels have prediction times, which keeps the events of the prediction day before that time
        self.event_times = False
        self.dataset_info: dict | None = self._read_dataset_info()

    def _metadata_file(self, name: str) -> Path | None:
        path = self.root / "metadata" / name if self.root is not None else None
        return path if path is not None and path.is_file() else None

    def _read_dataset_info(self) -> dict | None:
        path = self._metadata_file("dataset.json")
        if path is None:
            return None
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise UserError(f"{path}: not readable as JSON ({str(e).splitlines()[0]}); MEDS writes the "
                            "dataset metadata as one JSON object") from None
        if not isinstance(info, dict):
            raise UserError(f"{path}: expected a JSON object (dataset_name, dataset_version, ...), "
                            f"got {type(info).__name__}")
        return info

    @cached_property
    def subject_splits(self) -> dict[str, str] | None:
        """{str(subject_id): split} from metadata/subject_splits.parquet (MEDS split names: train,
        tuning, held_out; any name is kept as written), or None when the dataset has no such file."""
        path = self._metadata_file("subject_splits.parquet")
        if path is None:
            return None
        try:
            names = pq.read_schema(path).names
            table = current(arrow.read_parquet(path, columns=as_file(["subject_id", "split"], names)))
        except (pa.ArrowInvalid, OSError, KeyError) as e:
            why = e.args[0] if isinstance(e, KeyError) and e.args else str(e).splitlines()[0]
            raise UserError(f"{path}: not a MEDS subject split file with columns subject_id and split ({why})") from None
        out: dict[str, str] = {}
        for sid, split in zip(table["subject_id"].to_pylist(), table["split"].to_pylist()):
            if sid is None or split is None:
                raise UserError(f"{path}: a row without subject_id or split; every subject needs both")
            key = str(sid)
            if out.setdefault(key, str(split)) != str(split):
                raise UserError(f"{path}: subject {key} is in two splits ({out[key]} and {split})")
        return out

    batch_rows = 1 << 16   # rows per streamed batch (see _read_file); tests set it small

    def __iter__(self) -> Iterator[dict]:
        """Every patient as a dict of the JSON schema (the per-record path)."""
        for path in self.files:
            yield from self._read_file(path, self._patients)

    def blocks(self, parser, files: list[Path] | None = None, part: ShardPart | None = None) -> Iterator:
        """The patients of `files` (default: all) as columnar `MedsBlock`s, one per streamed piece; their
        tokens are created in `parser`. A piece whose subject ids are not plain integers or text (or are
        null) comes as patient dicts instead, for the per-record path."""
        def emit(table: pa.Table, subjects: list, has_end: bool) -> Iterator:
            t = table.schema.field("subject_id").type
            plain = pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            if not plain or any(s is None for s in subjects):
                yield from self._patients(table, subjects, has_end)
                return
            table = table.sort_by([("subject_id", "ascending"), ("time", "ascending")])
            yield MedsBlock(self, table, subjects, has_end, parser)

        for path in (self.files if files is None else files):
            yield from self._read_file(path, emit, part)

    def _parse(self, code: str | None) -> MedsCode:
        """parse_meds_code, once per distinct code string."""
        m = self._parsed.get(code)
        if m is None:
            m = ignored("<null code>") if code is None else parse_meds_code(code)
            if self.keep_other:
                m = other_code(code, m)
            self._parsed[code] = m
        return m

    def _read_file(self, path: Path, emit, part: ShardPart | None = None) -> Iterator:
        """One shard's patients in subject_id order. A shard sorted by subject_id (MEDS writes them so)
        is streamed in batches of `batch_rows` rows, so memory does not grow with the shard; an unsorted
        one is read whole and sorted, with a note. Either way the patients are the same. With `part`,
        only its row groups are read, and only its subjects kept (`shard_parts`)."""
        try:
            file = pq.ParquetFile(path)
            # the schema every batch has (older MEDS names read as the current ones), checked before any row
            schema = current(file.schema_arrow)
            missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
            if missing:   # reported as pq.read_table's errors are
                raise KeyError(f"no column {', '.join(missing)}")
            check_types(path, file.schema_arrow)
            if file.metadata.num_rows == 0:
                return
            is_sorted, used = self._scan(file, part)
        except (pa.ArrowInvalid, OSError, KeyError) as e:
            raise UserError(f"{path}: not a MEDS Parquet file with columns {', '.join(REQUIRED_COLUMNS)} "
                            f"({(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)).splitlines()[0]})") from None
        has_end = END_COLUMN in schema.names
        # numeric_value is read when the file has values: rows are duplicates only when their values match too
        values = VALUE_COLUMN in schema.names and (
            bool(self.value_edges) or holds_values(file, as_file([VALUE_COLUMN], file.schema_arrow.names)[0]))
        columns = list(REQUIRED_COLUMNS) + ([END_COLUMN] if has_end else []) + ([VALUE_COLUMN] if values else [])
        value_set = arrow.array(used, pa.string())
        if not is_sorted:
            print(f"note: {path} is not sorted by subject_id (MEDS shards are); reading it whole to sort it, "
                  "so memory grows with this file", file=sys.stderr)
            yield from self._read_whole(file, path, columns, value_set, has_end, emit, part)
            return
        carry, carry_subject = None, None   # used rows of a batch's last subject, which may go on
        for batch in batches(file, self.batch_rows, columns, part):
            table = _with_string_codes(pa.Table.from_batches([batch]))
            subjects = pc.unique(table["subject_id"]).to_pylist()   # ascending: the shard is sorted
            rows = table.filter(pc.is_in(table["code"], value_set=value_set))
            if carry is not None:
                rows = pa.concat_tables([carry, rows])
                if subjects[0] != carry_subject:
                    subjects.insert(0, carry_subject)
            last = subjects[-1]
            n_last = pc.sum(pc.equal(rows["subject_id"], arrow.scalar(last, rows.schema.field("subject_id").type))).as_py() or 0
            carry, carry_subject = rows.slice(rows.num_rows - n_last), last
            if len(subjects) > 1:
                yield from emit(rows.slice(0, rows.num_rows - n_last), subjects[:-1], has_end)
        if carry is not None:
            yield from emit(carry, [carry_subject], has_end)

    def _scan(self, file: pq.ParquetFile, part: ShardPart | None = None) -> tuple[bool, list]:
        """One pass over subject_id and code, in batches: whether subject ids never decrease (and none
        is null), and the distinct codes that are read. Rows of ignored codes are counted here, each
        distinct code is parsed once (most MIMIC-IV rows are labs and charts)."""
        is_sorted, previous, used, seen = True, None, [], set()
        for batch in batches(file, self.batch_rows, ["subject_id", "code"], part):
            ids = batch.column(0)
            if is_sorted:
                is_sorted = ids.null_count == 0 and (previous is None or previous <= ids[0].as_py()) and (
                    len(ids) < 2 or pc.all(pc.greater_equal(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py())
                previous = ids[len(ids) - 1].as_py()
            for code in self._used_codes(pc.cast(batch.column(1), pa.string())):
                if code not in seen:
                    seen.add(code)
                    used.append(code)
        return is_sorted, used

    def _used_codes(self, codes: pa.Array) -> list:
        """The distinct code strings of `codes` that are read; rows of ignored codes go to self.ignored."""
        counts = pc.value_counts(codes)
        used = []
        for code, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()):
            m = self._parse(code)
            if m.kind == "ignored":
                self.ignored[m.family] += n
            else:
                used.append(code)
        return used

    def _read_whole(self, file: pq.ParquetFile, path: Path, columns: list, value_set: pa.Array, has_end: bool,
                    emit, part: ShardPart | None = None) -> Iterator:
        """An unsorted shard (or part; `file` is it, opened): read whole, then sorted by subject_id and time."""
        in_file = as_file(columns, file.schema_arrow.names)
        if part is None:
            table = current(arrow.read_parquet(path, columns=in_file))
        else:
            table = subjects_in(current(file.read_row_groups(range(part.first, part.end), columns=in_file)), part)
        table = _with_string_codes(table)
        # A subject left without rows still becomes a patient (rejected as having no events), so the
        # rejects file counts every subject of the input.
        every_subject = pc.unique(table["subject_id"]).sort().to_pylist()
        yield from emit(table.filter(pc.is_in(table["code"], value_set=value_set)), every_subject, has_end)

    def _patients(self, table: pa.Table, subjects: list, has_end: bool) -> Iterator[dict]:
        """Patients of `subjects` (ascending) from `table`, their used rows (and none of anyone else's),
        each subject's rows in time order (a stable sort: ties keep the file's order). A subject
        without rows still becomes a patient (rejected as having no events), so the rejects file counts
        every subject of the input."""
        table = table.sort_by([("subject_id", "ascending"), ("time", "ascending")])
        table, n = drop_duplicate_rows(table)   # (MedsBlock drops them on the fast path)
        self.duplicates += n
        dates = iso_dates(table["time"]).to_pylist()
        ends = iso_dates(table[END_COLUMN]).to_pylist() if has_end else [None] * len(dates)
        ids = table["subject_id"].to_pylist()
        codes = table["code"].to_pylist()
        values = table[VALUE_COLUMN].to_pylist() if VALUE_COLUMN in table.column_names else None
        times = event_times_us(table["time"]).tolist() if self.event_times else None
        start = 0
        for subject in subjects:
            end = start
            while end < len(ids) and ids[end] == subject:
                end += 1
            yield self._patient(subject, dates[start:end], codes[start:end], ends[start:end],
                                values[start:end] if values is not None else None,
                                times[start:end] if times is not None else None)
            start = end

    def _patient_rows(self, subject, table: pa.Table, has_end: bool) -> dict:
        """One subject's patient dict from its used rows (sorted by time)."""
        return self._patient(subject, iso_dates(table["time"]).to_pylist(), table["code"].to_pylist(),
                             iso_dates(table[END_COLUMN]).to_pylist() if has_end else [None] * table.num_rows,
                             table[VALUE_COLUMN].to_pylist() if VALUE_COLUMN in table.column_names else None,
                             event_times_us(table["time"]).tolist() if self.event_times else None)

    def _patient(self, subject, dates: list, codes: list, ends: list, values: list | None = None,
                 times: list | None = None) -> dict:
        """`times`: each row's time in microseconds (NO_TIME unknown), given for a prediction-time cut;
        events then carry it as "time".

        A code row with a null time is a static fact of the subject (race, eye colour, a height): never a
        reason to reject it. With other_codes="keep" it becomes an event on the day of the subject's first
        dated event, so its token stands in the first visit (before every later event; a subject with no
        dated event has nowhere to put it: counted in `ignored` as "<family> (static)"); with "drop" it
        is counted there too. MEDS_BIRTH and GENDER rows are read as always."""
        p: dict = {"patient_id": subject, "diagnoses": [], "prescriptions": [], "procedures": [],
                   "hospitalizations": []}
        admissions: list = []
        statics: list = []   # (event list, event, family) of null-time code rows kept as static facts
        kept = self.kept
        edges = self.value_edges
        for i, (date, code, stop) in enumerate(zip(dates, codes, ends)):
            m = self._parse(code)
            kind = m.kind
            e = None
            if date is None and (kind in EVENT_KINDS or kind == "other"):   # a static fact
                if not self.keep_other:
                    self.ignored[f"{m.family} (static)"] += 1
                else:
                    statics.append(("diagnoses" if kind == "other" else kind,
                                    {"code": m.value, "date": None, "system": m.system}, m.family))
                continue
            if kind in EVENT_KINDS:
                e = {"code": m.value, "date": date, "system": m.system}
                p[kind].append(e)
            elif kind == "other":   # the JSON schema has three event lists; the system names the token type
                text = m.value
                if values is not None and code in edges and values[i] is not None and math.isfinite(values[i]):
                    text = f"{text}{BIN_SEPARATOR}{bin_of(values[i], edges[code])}"
                e = {"code": text, "date": date, "system": m.system}
                p["diagnoses"].append(e)
            elif kind == "birth":
                p["birth_date"] = date
            elif kind == "sex":
                p["sex"] = m.code
            elif kind == "admission":
                admissions.append(date)
            elif kind == "discharge" and admissions:
                p["hospitalizations"].append({"admission_date": admissions.pop(0), "discharge_date": date})
            elif kind == "visit" and stop is not None:
                p["hospitalizations"].append({"admission_date": date, "discharge_date": stop})
            else:
                self.ignored[m.family if kind != "visit" else f"{m.family} (no end)"] += 1
                continue
            if e is not None and times is not None and times[i] != NO_TIME:
                e["time"] = times[i]
            kept[m.family] += 1
        if statics:
            place_statics(p, statics, times is not None, self.kept, self.ignored)
        return p


def _with_string_codes(table: pa.Table) -> pa.Table:
    """`code` as string (large_string / dictionary columns are cast), so tables concatenate and filter."""
    return table.set_column(table.schema.get_field_index("code"), "code", pc.cast(table["code"], pa.string()))


def check_types(path: Path, schema: pa.Schema) -> None:
    """One line per file, before any row is read: MEDS `time` (and `end`, when present) is a timestamp,
    `code` is text. `schema` is the file's own (a column is named as the file names it)."""
    for name in as_file(("time", END_COLUMN), schema.names):
        if name not in schema.names:
            continue
        t = schema.field(name).type
        if not (pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_null(t)):
            raise UserError(f"{path}: column '{name}' is {t}; MEDS requires a timestamp (e.g. timestamp[us]): "
                            "convert epoch numbers or date strings to timestamps when writing the file")
    c = schema.field("code").type
    if pa.types.is_dictionary(c):
        c = c.value_type
    if not (pa.types.is_string(c) or pa.types.is_large_string(c) or pa.types.is_null(c)):
        raise UserError(f"{path}: column 'code' is {c}; MEDS requires string codes such as 'ICD10CM//E11.65'")


def iso_dates(time: pa.ChunkedArray) -> pa.ChunkedArray:
    """'YYYY-MM-DD' strings (null stays null). A timezone-aware timestamp is stored as UTC, and casting
    away its zone keeps that UTC value, so 2021-03-01T23:30-05:00 gives 2021-03-02 (strftime would
    give the local date)."""
    t = time.type
    if pa.types.is_null(t):
        return pa.chunked_array([pa.nulls(len(time), pa.string())])
    if pa.types.is_timestamp(t) and t.tz is not None:
        time = time.cast(pa.timestamp(t.unit))
    return time.cast(pa.date32()).cast(pa.string())

