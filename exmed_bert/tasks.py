"""Task CSV (`patient_id,label[,prediction_date]`): reading, per-row validation, and rejects.

Bad rows (non-integer or out-of-range label, bad date, duplicate or unknown id) are either a counted
skip written to `task_rejected.csv` (`on_error="skip"`) or one clear error naming file and line
(`on_error="fail"`). A file that is not a task CSV at all is always an error.
"""

from __future__ import annotations

import csv
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterable

from exmed_bert.data.splits import (Pretraining, SplitRecord, check_no_pretraining_leak, read_split_record,
                                    resolve_split)
from exmed_bert.errors import UserError
from exmed_bert.io import atomic_write

REJECTS_NAME = "task_rejected.csv"
MAX_ID_CHARS = 200


@dataclass
class TaskRow:
    patient_id: str
    label: int
    prediction_date: date | None
    line: int


@dataclass
class TaskTable:
    """Valid rows by patient id, plus every rejected row with its reason."""

    path: Path
    num_labels: int
    rows: dict[str, TaskRow] = field(default_factory=dict)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, patient_id, reason)
    kinds: Counter = field(default_factory=Counter)  # short reason -> count, for the summary line
    on_error: str = "skip"

    def reject(self, line: int, patient_id: str, reason: str, kind: str) -> None:
        if self.on_error == "fail":
            raise UserError(f"{self.path}: line {line}: {reason} (fix the row, or pass --on-task-error skip "
                            "to skip bad rows into task_rejected.csv)")
        self.rejected.append((line, patient_id, reason))
        self.kinds[kind] += 1

    def labels(self) -> dict[str, int]:
        return {pid: r.label for pid, r in self.rows.items()}

    def drop_unknown(self, known_ids: Iterable[str], where: str) -> None:
        """Reject rows whose patient id is not among `known_ids` (the patients file or datasets)."""
        known = set(known_ids)
        for pid in [p for p in self.rows if p not in known]:
            row = self.rows.pop(pid)
            self.reject(row.line, pid, f"unknown patient id (not in {where})", "unknown patient id")


def _parse_label(raw: str, num_labels: int) -> tuple[int | None, str | None, str | None]:
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
    if not 0 <= value < num_labels:
        return (None, f"label {value} out of range 0..{num_labels - 1} for --num-labels {num_labels}",
                "label out of range")
    return value, None, None


def read_task_csv(path: str | os.PathLike, num_labels: int = 2, on_error: str = "skip") -> TaskTable:
    """Read and validate a task CSV. Raises UserError if the file itself is unusable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: task CSV not found (pass --task-data with a CSV of "
                        "patient_id,label[,prediction_date])")
    table = TaskTable(path=path, num_labels=num_labels, on_error=on_error)
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
    return table


def _read_row(table: TaskTable, rec: list[str], line: int, i_id: int, i_label: int, i_date: int | None) -> None:
    need = max(i_id, i_label, i_date or 0)
    pid = rec[i_id].strip() if len(rec) > i_id else ""
    if len(rec) <= need:
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
    when = None
    if i_date is not None and rec[i_date].strip():
        try:
            when = date.fromisoformat(rec[i_date].strip())
        except ValueError:
            return table.reject(line, pid, f"prediction_date {rec[i_date].strip()[:40]!r} is not a YYYY-MM-DD date",
                                "bad prediction_date")
    if pid in table.rows:
        return table.reject(line, pid, f"duplicate patient_id (first on line {table.rows[pid].line})",
                            "duplicate patient_id")
    table.rows[pid] = TaskRow(pid, label, when, line)


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


# ---------------------------------------------------------------------------------------------
# task datasets: the encoded splits cut at each patient's prediction date

SPLIT_NAMES = ("train", "val", "test")


def find_task_datasets(data_dir: str | os.PathLike) -> dict[str, Path] | None:
    """{split: path} of `<stem>_task_<split>.pt` in data_dir, or None when there are none."""
    data_dir = Path(data_dir)
    stems = sorted({p.name[: -len("_task_train.pt")] for p in data_dir.glob("*_task_train.pt")})
    if not stems:
        return None
    if len(stems) > 1:
        raise UserError(f"{data_dir}: several task datasets ({', '.join(s + '_task_*.pt' for s in stems)}); "
                        "keep one task per --data-dir")
    paths = {s: data_dir / f"{stems[0]}_task_{s}.pt" for s in SPLIT_NAMES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: task split missing; re-run the conversion with --split all --task-data")
    return paths


def reconcile(table: TaskTable, splits: dict, where: str, converted_ids: set[str] | None = None) -> None:
    """Check the datasets' labels against the task CSV; CSV rows the datasets lack become counted skips.

    A dataset patient whose label differs from (or is absent in) the CSV means the datasets were built
    from another task file: that is an error, not something to paper over. `converted_ids` (every
    patient of the pretraining conversion) tells an unknown id from one with no events before its date.
    """
    labels = table.labels()
    seen: set[str] = set()
    for split, ds in splits.items():
        ids, ys = ds.patient_ids, ds.data["labels"].tolist()
        for pid, y in zip(ids, ys):
            if labels.get(pid) != y:
                got = "absent from" if pid not in labels else f"label {labels[pid]} in"
                raise UserError(f"{where}: patient {pid!r} has label {y} in the {split} task dataset but is {got} "
                                f"{table.path}; the datasets were built from another task CSV - re-run the "
                                "conversion with this --task-data, or pass the matching --task-data")
        seen.update(ids)
    for pid in [p for p in table.rows if p not in seen]:
        row = table.rows.pop(pid)
        if converted_ids is not None and pid in converted_ids:
            table.reject(row.line, pid, "no events before the prediction date", "no events before prediction date")
        elif converted_ids is not None:
            table.reject(row.line, pid, f"unknown patient id (not among the converted patients in {where})",
                         "unknown patient id")
        else:
            table.reject(row.line, pid, f"unknown patient id, or no events before the prediction date (not in "
                         f"the task datasets in {where})", "unknown patient id or no events")


def converted_patient_ids(task_paths: dict[str, Path]) -> set[str] | None:
    """Ids in the pretraining datasets beside `<stem>_task_*.pt` (`<stem>_*.pt`), or None if absent."""
    from exmed_bert.data.dataset import PatientDataset

    ids: set[str] = set()
    for split, p in task_paths.items():
        full = p.with_name(p.name.replace(f"_task_{split}.pt", f"_{split}.pt"))
        if not full.is_file():
            return None
        ids.update(PatientDataset.load(full).patient_ids)
    return ids


def check_labels(y, num_labels: int, where: str) -> None:
    present = {int(v) for v in y}
    if not present <= set(range(num_labels)):
        raise UserError(f"{where}: labels {sorted(present)} are outside 0..{num_labels - 1}; "
                        "check --num-labels against the task CSV")
    missing = set(range(num_labels)) - present
    if missing:
        raise UserError(f"{where}: no training patient has label {sorted(missing)}; every class needs "
                        "examples in the train split (more patients, or check the task CSV)")


def check_dataset_labels(splits: dict, num_labels: int) -> None:
    for split, ds in splits.items():
        if "labels" not in ds.data:
            raise UserError(f"{ds.path}: no labels; build task datasets with the conversion's --task-data")
        y = ds.data["labels"]
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_labels):
            raise UserError(f"{ds.path}: labels {int(y.min())}..{int(y.max())} do not fit --num-labels {num_labels}")


def write_valid_rows(table: TaskTable, path: str | os.PathLike) -> Path:
    """The accepted rows as a clean task CSV, for the converter (which stops at the first bad row)."""
    with atomic_write(path) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["patient_id", "label", "prediction_date"])
        for r in table.rows.values():
            w.writerow([r.patient_id, r.label, r.prediction_date.isoformat() if r.prediction_date else ""])
    return Path(path)


def load_task_splits(data_dir: str | os.PathLike, task_data: str | os.PathLike, *, num_labels: int,
                     output_dir: str | os.PathLike, on_error: str = "skip",
                     input_path: str | os.PathLike | None = None, vocab=None, max_length: int = 512,
                     split_seed: int | None = None, train_ratio: float | None = None,
                     pretraining: Pretraining | None = None):
    """The train/val/test task datasets every model reads, plus the vocabulary they are encoded with.

    With a conversion in data_dir (dataset_manifest.json) the task datasets next to it are reused, or
    built with its vocabulary and its split of record when missing or made from another task CSV. Without
    one, fine-tuning (`vocab` given) encodes `input_path` itself into output_dir/task_data/, split as the
    model's `pretraining` conversion was (its manifest), or by `split_seed`/`train_ratio` when no split
    is recorded; flags that contradict a split of record are an error. With `pretraining` known, a val
    or test patient the model was pretrained on is refused. Bad task rows are skipped into
    output_dir/task_rejected.csv or raise (`on_error`).
    Returns (splits {name: PatientDataset}, Vocab, provenance dict).
    """
    from exmed_bert.convert.conversion import build_task_datasets, task_datasets_for
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab

    data_dir, out = Path(data_dir), Path(output_dir)
    table = read_task_csv(task_data, num_labels=num_labels, on_error=on_error)
    # the converter stops at the first bad row, so it gets only the rows that passed validation
    csv_for_build = Path(task_data) if not table.rejected else write_valid_rows(table, out / "task_valid_rows.csv")
    split: SplitRecord | None = read_split_record(data_dir)
    if split is not None:
        resolve_split(split, split_seed, train_ratio)  # the conversion decided; contradicting flags are refused
        paths = task_datasets_for(data_dir, csv_for_build)
        data_vocab_path = data_dir / "vocab.json"
    elif vocab is not None and input_path is not None and Path(input_path).exists():
        split = resolve_split(pretraining.record if pretraining else None, split_seed, train_ratio)
        print(f"no conversion in {data_dir}; encoding {input_path} with the model's vocabulary, split by "
              f"{split.describe()}", file=sys.stderr)
        data_vocab_path = out / "task_data" / "vocab.json"
        vocab.save(data_vocab_path)
        paths = build_task_datasets(input_path, csv_for_build, data_vocab_path, out / "task_data" / "task.pt",
                                    max_length=max_length, train_ratio=split.train_ratio, seed=split.seed)
    else:
        paths = find_task_datasets(data_dir) if data_dir.is_dir() else None
        data_vocab_path = data_dir / "vocab.json"
        if paths is None:
            raise UserError(f"{data_dir}: no converted dataset (dataset_manifest.json); run "
                            "scripts/convert_synthetic_to_dataset.py --input data/synthetic_patients.json "
                            f"--output {data_dir}/synthetic.pt first"
                            + ("" if vocab is None else ", or pass --input with the patients JSON"))
    splits = {s: PatientDataset.load(paths[s]) for s in SPLIT_NAMES}
    if pretraining is not None:
        try:
            check_no_pretraining_leak({s: ds.patient_ids for s, ds in splits.items()},
                                      PatientDataset.load(pretraining.train_path).patient_ids, pretraining)
        except UserError:
            if csv_for_build != Path(task_data):
                csv_for_build.unlink(missing_ok=True)  # a refused run leaves no partial output
            raise
    check_dataset_labels(splits, num_labels)
    reconcile(table, splits, str(data_dir), converted_patient_ids(paths))
    data_vocab = Vocab.load(data_vocab_path)
    for ds in splits.values():
        ds.check_vocab(data_vocab, data_vocab_path)
    if vocab is not None and list(vocab.tokens) != list(data_vocab.tokens):
        raise UserError(f"{data_vocab_path}: differs from the model's vocab.json, so the codes would mean "
                        "different things; fine-tune on data converted with the same input and seed as "
                        "pretraining, or pass --input (and a --data-dir without a conversion) to re-encode")
    if len(splits["train"]) == 0 or not table.rows:
        if csv_for_build != Path(task_data):
            csv_for_build.unlink(missing_ok=True)  # a failed run leaves no partial output
        raise UserError(f"{table.path}: no usable rows ({len(table.rows)} of "
                        f"{len(table.rows) + len(table.rejected)} match a converted patient with events before "
                        f"its prediction date, {len(splits['train'])} in the train split); check that the task CSV "
                        f"belongs to the patients converted in {data_dir}")
    write_rejects(table, out)
    source = {"task_data": str(table.path), "task_rows": len(table.rows) + len(table.rejected),
              "task_rows_rejected": len(table.rejected),
              "task_datasets": {s: str(p) for s, p in paths.items()},
              "split": None if split is None else {"seed": split.seed, "train_ratio": split.train_ratio,
                                                   "from": split.source},
              "pretraining_data": None if pretraining is None else str(pretraining.train_path)}
    return splits, (vocab if vocab is not None else data_vocab), source
