"""Generated patients as a MEDS root that MEDS tools read: data/<split>/<n>.parquet, metadata/ (dataset.json,
subject_splits.parquet, codes.parquet) and the planted task as MEDS labels under task_labels/<task>/, with
each subject's true risk in task_labels/<task>_risk.csv beside them. `write_meds_root` is the writer.

Subject ids: a patient id's number (P0042 -> 42), so ids are int64 and stay the same for a given cohort.
Splits: train / tuning / held_out are the converter's hash split of the patient id (`data.splits.split_index`
with the same seed and train ratio), so converting this root or the same cohort's JSON sees the same patients
in the same splits.
Stays: one `Visit/IP` row per stay at its admission, with its discharge in the `end` column (null on every
other row): meds_etl's OMOP layout, which the converter reads as a stay from `time` to `end`. Separate
admission and discharge rows would be paired first-in-first-out, which mis-pairs nested stays; a stay
repeated exactly (same admission and discharge day) is stamped one microsecond later per repeat, so a
reader that drops identical rows keeps it.
Times: the generator has dates only, and its task leaves the prediction date out. Every event and stay
boundary is stamped at noon of its date (`EVENT_TIME`), and a label's prediction_time is midnight starting the
prediction date: events at or before the time (MEDS's rule) and events before it (a strict cut) are then the
same, those of the days before the prediction date, and the converter cuts stays at that date as from the
JSON. Static facts (GENDER) have no time; MEDS_BIRTH is at midnight of the birth date.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from exmed_bert import codes
from exmed_bert.codes.common import CodeError
from exmed_bert.data.layout import US_PER_DAY, meds_subject_id, risk_path
from exmed_bert.data.splits import DEFAULT_SEED, DEFAULT_TRAIN_RATIO, split_index
from exmed_bert.errors import UserError
from exmed_bert.io import write_json, write_run_info
from exmed_bert.synthetic.args import GenerateArgs
from exmed_bert.synthetic.cohort import run as generate_json
from exmed_bert.synthetic.writer import RISK_HEADER

ETL_NAME = "exmed_bert.synthetic.meds_root"
MEDS_VERSION = "0.4.1"                                   # the schemas this root is written to (meds on PyPI)
MEDS_SPLIT_NAMES = ("train", "tuning", "held_out")      # by data.splits index: 0 train, 1 val, 2 test
EVENT_TIME = 12 * 3_600_000_000                          # µs after midnight: noon, strictly inside the date
PATIENTS_PER_SHARD = 10_000
KIND_VOCAB = {"diagnoses": "ICD10CM", "prescriptions": "ATC", "procedures": "CPT"}   # JSON list -> MEDS prefix
VOCAB_SYSTEM = {"ICD10CM": "icd10cm", "ICD9CM": "icd9cm", "ATC": "atc", "CPT": "cpt", "RXNORM": "rxnorm"}
STAY, BIRTH = "Visit/IP", "MEDS_BIRTH"                 # a stay: OMOP's inpatient visit (meds_etl's code)
FIXED_CODES = {BIRTH: "birth of the subject (time: the birth date)",
               STAY: "inpatient hospital stay (time: admission; end: discharge)", "GENDER//F": "sex: female",
               "GENDER//M": "sex: male"}

DATA_SCHEMA = pa.schema([pa.field("subject_id", pa.int64(), nullable=False), pa.field("time", pa.timestamp("us")),
                         pa.field("code", pa.string(), nullable=False), pa.field("numeric_value", pa.float32()),
                         pa.field("end", pa.timestamp("us"))])   # a stay's discharge; null on other rows
CODES_SCHEMA = pa.schema([pa.field("code", pa.string(), nullable=False), pa.field("description", pa.string()),
                          pa.field("parent_codes", pa.list_(pa.string()))])
SPLITS_SCHEMA = pa.schema([pa.field("subject_id", pa.int64(), nullable=False),
                           pa.field("split", pa.string(), nullable=False)])


def subject_id(patient_id: str) -> int:
    """The MEDS subject id of a generator patient id: its number (P0042 -> 42; data.layout.meds_subject_id)."""
    n = meds_subject_id(patient_id)
    if n is None:
        raise UserError(f"patient id {patient_id!r} has no number at its end; MEDS subject ids are integers "
                        "(the generator writes ids such as P0042, subject 42)")
    return n


def meds_split(patient_id: str, seed: int = DEFAULT_SEED, train_ratio: float = DEFAULT_TRAIN_RATIO) -> str:
    """The MEDS split of a patient: the converter's hash split of its patient id, in MEDS's names."""
    return MEDS_SPLIT_NAMES[split_index(patient_id, seed, train_ratio)]


def _rows(p: dict) -> tuple[list, list, list, list]:
    """One patient's (date or None, µs after midnight, code, end date or None) rows: GENDER (no time),
    MEDS_BIRTH, then events and stays (one `Visit/IP` row at the admission, the discharge as its end); in
    time order, statics first (the shard is sorted again, stably, when written)."""
    dated: list[tuple[str, int, str, str | None]] = []
    for kind, vocab in KIND_VOCAB.items():
        for e in p.get(kind) or []:
            prefix = (e.get("system") or vocab).upper()
            dated.append((e["date"], EVENT_TIME, f"{prefix}//{e['code']}", None))
    repeats: Counter = Counter()
    for s in p.get("hospitalizations") or []:
        stay = (s["admission_date"], s["discharge_date"])
        # the k-th repeat of an identical stay at noon + k µs: still its day, no longer a duplicate row
        dated.append((stay[0], EVENT_TIME + repeats[stay], STAY, stay[1]))
        repeats[stay] += 1
    dated.sort(key=lambda r: (r[0], r[1]))               # stable: same-day stays keep the JSON's order
    if p.get("birth_date"):
        dated.insert(0, (p["birth_date"], 0, BIRTH, None))
    if p.get("sex"):
        dated.insert(0, (None, 0, f"GENDER//{p['sex']}", None))
    dates, offsets, codes_, ends = zip(*dated) if dated else ((), (), (), ())
    return list(dates), list(offsets), list(codes_), list(ends)


def _times(dates: list, offsets: list) -> tuple[np.ndarray, np.ndarray]:
    """(µs since 1970 [R] int64, no time [R] bool) of ('YYYY-MM-DD' or None, µs after midnight) rows."""
    days = np.array(["NaT" if d is None else d for d in dates], dtype="datetime64[D]")
    none = np.isnat(days)
    us = days.astype("datetime64[us]").astype(np.int64) + np.asarray(offsets, dtype=np.int64)
    return np.where(none, 0, us), none


def prediction_time(prediction_date: str) -> int:
    """A label's prediction_time (µs since 1970): midnight starting the prediction date, before its events."""
    return int(np.datetime64(prediction_date, "D").astype(np.int64)) * US_PER_DAY


class _Shards:
    """One split's data and label shards: patients buffered and written every `per_shard` patients."""

    def __init__(self, root: Path, split: str, label_dir: Path | None, label_column: str, per_shard: int):
        self.root, self.split, self.label_dir = root, split, label_dir
        self.label_column, self.per_shard = label_column, per_shard
        self.sids, self.dates, self.offsets, self.codes, self.ends, self.labels = [], [], [], [], [], []
        self.patients = self.shards = 0
        self.files: list[str] = []

    def add(self, sid: int, rows: tuple[list, list, list, list], task: tuple[int, int] | None) -> None:
        """One patient's rows (`_rows`), and its task row (label, prediction time in µs) if it has one."""
        dates, offsets, codes_, ends = rows
        self.sids += [sid] * len(dates)
        self.dates += dates
        self.offsets += offsets
        self.codes += codes_
        self.ends += ends
        if task is not None:
            self.labels.append((sid, task[1], task[0]))
        self.patients += 1
        if self.patients % self.per_shard == 0:
            self.flush()

    def flush(self) -> None:
        if not self.sids and not self.labels:
            return
        name = f"{self.shards}.parquet"
        us, none = _times(self.dates, self.offsets)
        end, no_end = _times(self.ends, [EVENT_TIME] * len(self.ends))   # a discharge at noon, as events
        sids = np.asarray(self.sids, dtype=np.int64)
        # by subject, then time with static facts (no time) first; lexsort is stable, so ties keep their order
        order = np.lexsort((np.where(none, np.iinfo(np.int64).min, us), sids))
        data = pa.table([pa.array(sids[order]), pa.array(us[order], pa.timestamp("us"), mask=none[order]),
                         pa.array(self.codes, pa.string()).take(pa.array(order)),
                         pa.nulls(len(order), pa.float32()),
                         pa.array(end[order], pa.timestamp("us"), mask=no_end[order])], schema=DATA_SCHEMA)
        path = self.root / "data" / self.split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, path)
        self.files.append(str(path.relative_to(self.root)))
        if self.label_dir is not None and self.labels:
            self.labels.sort()
            sid, when, value = zip(*self.labels)
            vtype = pa.bool_() if self.label_column == "boolean_value" else pa.int64()
            labels = pa.table({"subject_id": pa.array(sid, pa.int64()),
                               "prediction_time": pa.array(when, pa.int64()).cast(pa.timestamp("us")),
                               self.label_column: pa.array([bool(v) if vtype == pa.bool_() else v for v in value],
                                                           vtype)})
            (self.label_dir / self.split).mkdir(parents=True, exist_ok=True)
            pq.write_table(labels, self.label_dir / self.split / name)
        self.sids, self.dates, self.offsets, self.codes, self.ends, self.labels = [], [], [], [], [], []
        self.shards += 1


def code_metadata(code_strings: Iterable[str]) -> pa.Table:
    """metadata/codes.parquet: each code with its description and parent codes (as MEDS codes of the same
    vocabulary, nearest first) from the shipped code tables; None where the tables do not know the code."""
    rows = {"code": [], "description": [], "parent_codes": []}
    for code in sorted(set(code_strings)):
        description, parents = FIXED_CODES.get(code), []
        vocab, _, value = code.partition("//")
        system = VOCAB_SYSTEM.get(vocab)
        if system is not None:
            try:
                description = codes.describe(value, system)
                parents = [f"{vocab}//{p}" for p in codes.parents(value, system)]
            except CodeError:
                pass
        rows["code"].append(code)
        rows["description"].append(description)
        rows["parent_codes"].append(parents)
    return pa.table(rows, schema=CODES_SCHEMA)


def write_meds_root(patients: Iterable[dict], task_rows: Iterable[tuple[str, int, str]] | None,
                    risk: Mapping[str, float | str] | None, out_dir: str | os.PathLike, *,
                    seed: int = DEFAULT_SEED, train_ratio: float = DEFAULT_TRAIN_RATIO, task_name: str = "task",
                    patients_per_shard: int = PATIENTS_PER_SHARD, split_folders: bool = True,
                    dataset_name: str = "ExMed-BERT synthetic cohort", dataset_version: str = "1",
                    generator_metadata: dict | None = None) -> dict:
    """Write `patients` (dicts of the generator's JSON schema, any order) as a MEDS root at `out_dir`.

    `task_rows`: (patient_id, label, prediction date 'YYYY-MM-DD'), written as MEDS labels under
    task_labels/<task_name>/<split>/<n>.parquet (sharded like data/; boolean_value for 0/1 labels, else
    integer_value); `risk`: {patient_id: true risk} written to task_labels/<task_name>_risk.csv keyed by
    subject id (a string value is written as it is, so a float64's repr round-trips). `seed` and
    `train_ratio` are the conversion's (`--seed`, `--train-ratio`). `split_folders=False` writes every split's
    subjects, in input order, to data/<n>.parquet (splits still in metadata/subject_splits.parquet): the
    layout of the conversion benchmarks, N equal shards. The root is built beside `out_dir` and
    moved there when complete; an earlier root of this writer there is replaced, any other folder refused.
    Returns a summary: subjects and rows per split, files, label rows, the risk file.
    """
    out = Path(out_dir)
    check_meds_output(out)
    tasks = {pid: (int(label), prediction_time(date)) for pid, label, date in task_rows} if task_rows is not None else None
    label_column = "boolean_value" if tasks is None or all(v[0] in (0, 1) for v in tasks.values()) else "integer_value"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        label_dir = tmp / "task_labels" / task_name if tasks is not None else None
        if split_folders:
            shards = {s: _Shards(tmp, s, label_dir, label_column, patients_per_shard) for s in MEDS_SPLIT_NAMES}
        else:
            flat = _Shards(tmp, "", label_dir, label_column, patients_per_shard)
            shards = dict.fromkeys(MEDS_SPLIT_NAMES, flat)
        per_split: Counter = Counter()
        seen: set[int] = set()
        kept_ids: dict[int, str] = {}
        code_rows: Counter = Counter()
        splits: list[tuple[int, str]] = []
        for p in patients:
            pid = str(p["patient_id"])
            sid = subject_id(pid)
            if sid in seen:
                raise UserError(f"patient {pid}: subject id {sid} is already taken by {kept_ids[sid]}; "
                                "MEDS needs one integer id per patient")
            seen.add(sid)
            kept_ids[sid] = pid
            split = meds_split(pid, seed, train_ratio)
            rows = _rows(p)
            code_rows.update(rows[2])
            shards[split].add(sid, rows, tasks.get(pid) if tasks is not None else None)
            splits.append((sid, split))
            per_split[split] += 1
        for s in dict.fromkeys(shards.values()):
            s.flush()
        (tmp / "metadata").mkdir(exist_ok=True)
        splits.sort()
        pq.write_table(pa.table({"subject_id": pa.array([s for s, _ in splits], pa.int64()),
                                 "split": pa.array([n for _, n in splits], pa.string())}, schema=SPLITS_SCHEMA),
                       tmp / "metadata" / "subject_splits.parquet")
        pq.write_table(code_metadata(code_rows), tmp / "metadata" / "codes.parquet")
        # no created_at: the same cohort and seed give the same bytes (the generator's promise)
        write_json(tmp / "metadata" / "dataset.json", {
            "dataset_name": dataset_name, "dataset_version": dataset_version, "etl_name": ETL_NAME,
            "etl_version": "1", "meds_version": MEDS_VERSION})
        if generator_metadata is not None:
            write_json(tmp / "metadata" / "generator.json", generator_metadata)
        risk_file = None
        if risk is not None and tasks is not None:
            risk_file = risk_path(tmp / "task_labels" / task_name)   # where the report's oracle looks
            with open(risk_file, "w", encoding="utf-8", newline="") as f:
                f.write(RISK_HEADER)
                for sid, pid in sorted(kept_ids.items()):
                    if pid in risk:
                        v = risk[pid]
                        f.write(f"{sid},{v if isinstance(v, str) else repr(float(v))}\n")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    labelled = sum(1 for pid in kept_ids.values() if tasks is not None and pid in tasks)
    return {"root": str(out), "subjects": len(kept_ids), "rows": int(sum(code_rows.values())),
            "splits": {s: per_split[s] for s in MEDS_SPLIT_NAMES},
            "files": [f for s in dict.fromkeys(shards.values()) for f in s.files],
            "labels": str(out / "task_labels" / task_name) if tasks is not None else None,
            "label_rows": labelled, "label_column": label_column if tasks is not None else None,
            "labels_without_a_patient": (len(tasks) - labelled) if tasks is not None else 0,
            "risk_file": str(risk_path(out / "task_labels" / task_name)) if risk_file is not None else None}


def check_meds_output(out: Path) -> None:
    """`out` may be new, an empty folder or a root this writer made (replaced); anything else is refused,
    so a typo never deletes someone's data."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--output {out} is a file; --format meds writes a folder (a MEDS root): give a folder path")
    if any(out.iterdir()) and _etl_of(out) != ETL_NAME:
        raise UserError(f"--output {out} is a folder that this generator did not write as a MEDS root; give a new "
                        "or empty folder (a root written here before is replaced)")


def _etl_of(root: Path) -> str | None:
    try:
        return json.loads((root / "metadata" / "dataset.json").read_text(encoding="utf-8")).get("etl_name")
    except (OSError, ValueError, AttributeError):
        return None


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished root `tmp` to `out`, replacing an earlier one (never a partial root at `out`)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


# -- the generator's files as the writer's inputs --------------------------------------------------------------


def read_patients(path: str | os.PathLike) -> Iterator[dict]:
    """Patients of a generator JSON (`{"patients": [...]}`) or JSONL file; JSONL is streamed."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
        return
    yield from json.loads(path.read_text(encoding="utf-8"))["patients"]


def read_task_rows(path: str | os.PathLike) -> list[tuple[str, int, str]]:
    """(patient_id, label, prediction_date) of a generator task CSV."""
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["patient_id"], int(r["label"]), r["prediction_date"]) for r in csv.DictReader(f)]


def read_risk_strings(path: str | os.PathLike) -> dict[str, str]:
    """{patient_id: true risk as written} of a `<task stem>_risk.csv` (the text keeps the float64 exact)."""
    with open(path, encoding="utf-8", newline="") as f:
        return {r["patient_id"]: r["true_risk"] for r in csv.DictReader(f)}


# -- the stage: generate_synthetic_patients.py --format meds ---------------------------------------------------


def run(args: GenerateArgs) -> dict:
    """The generator stage writing a MEDS root at `args.output`: the cohort is generated as JSONL in a
    scratch folder beside it (the same patients, task and risks as --format json with this seed), then
    written as MEDS; --task-output is not written (the task is in the root). Returns the summary."""
    out = Path(args.output)
    check_meds_output(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.cohort.", dir=out.parent) as tmp:
        jsonl, task_csv = Path(tmp) / "patients.jsonl", Path(tmp) / "task.csv"
        with contextlib.redirect_stdout(io.StringIO()):   # its line names the scratch files; ours follows
            meta = generate_json(dataclasses.replace(args, output=str(jsonl), task_output=str(task_csv),
                                                     format="json"))
        try:
            summary = write_meds_root(read_patients(jsonl), read_task_rows(task_csv),
                                      read_risk_strings(risk_path(task_csv)), out, seed=args.seed,
                                      train_ratio=args.train_ratio, task_name=args.task,
                                      dataset_name=f"ExMed-BERT synthetic cohort ({args.task} task, seed {args.seed})",
                                      dataset_version=meta.get("version", "1"), generator_metadata=meta)
        except OSError as e:
            raise UserError(f"{e.filename or out}: write failed ({e.strerror or e})") from None
    write_run_info(out.parent, args, name=f"{out.name}_run_config.json")
    t, sp = meta["task"], summary["splits"]
    oracle = "n/a" if t.get("oracle_auroc") is None else format(t["oracle_auroc"], ".3f")
    print(f"wrote {summary['subjects']} subjects as a MEDS root at {out} ({summary['rows']} rows; train "
          f"{sp['train']}, tuning {sp['tuning']}, held_out {sp['held_out']}); task labels {summary['labels']}: "
          f"prevalence {t['prevalence']:.1%}, whole-cohort oracle AUROC {oracle}; true risk per subject in "
          f"{summary['risk_file']}")
    return summary
