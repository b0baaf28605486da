"""The task splits every model reads: the encoded `<stem>_task_{train,val,test}.pt` of a conversion, found,
built or re-encoded, and checked against the task data (a task CSV or MEDS labels: labels, unknown ids, the
split of record).

Rows the CSV reader rejects and rows no converted patient matches are counted skips written to
`task_rejected.csv` (`on_error="skip"`) or one error naming file and line (`on_error="fail"`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from exmed_bert.convert import (ConvertArgs, TaskTable, build_task_datasets, dataset_keys, is_meds_labels,
                                read_task_csv, task_datasets_for, vocab_settings, write_rejects)
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.layout import US_PER_DAY, time_to_iso
from exmed_bert.data.splits import (SPLITS, Pretraining, SplitRecord, check_no_pretraining_leak, read_split_record,
                                    resolve_split)
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError


def find_task_datasets(data_dir: str | os.PathLike) -> dict[str, Path] | None:
    """{split: path} of `<stem>_task_<split>.pt` in data_dir, or None when there are none."""
    data_dir = Path(data_dir)
    stems = sorted({p.name[: -len("_task_train.pt")] for p in data_dir.glob("*_task_train.pt")})
    if not stems:
        return None
    if len(stems) > 1:
        raise UserError(f"{data_dir}: several task datasets ({', '.join(s + '_task_*.pt' for s in stems)}); "
                        "keep one task per --data-dir")
    paths = {s: data_dir / f"{stems[0]}_task_{s}.pt" for s in SPLITS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: task split missing; re-run the conversion with --split all --task-data")
    return paths


def reconcile(table: TaskTable, splits: dict, where: str, converted_ids: set[str] | None = None) -> None:
    """Check the datasets' labels against the task CSV; CSV rows the datasets lack become counted skips.

    A dataset patient whose label differs from (or is absent in) the CSV means the datasets were built
    from another task file: that is an error, not something to paper over. `converted_ids` (every
    patient of the pretraining conversion) tells an unknown id from one with no events before its date (a
    conversion keeps such a row, [CLS] only; task datasets made before it did lack them).
    """
    labels = table.labels()   # by sample_key: a MEDS subject's rows are told apart by prediction time
    seen: set[str] = set()
    for split, ds in splits.items():
        keys, ys = dataset_keys(ds.data, ds.patient_ids), ds.data["labels"].tolist()
        for key, y in zip(keys, ys):
            if labels.get(key) != y:
                got = "absent from" if key not in labels else f"label {labels[key]} in"
                pid, _, when = key.rpartition("@") if "prediction_times" in ds.data else ("", "", "")
                what = f"patient {pid!r} at prediction time {time_to_iso(int(when))}" if pid else f"patient {key!r}"
                raise UserError(f"{where}: {what} has label {y} in the {split} task dataset but is {got} "
                                f"{table.path}; the datasets were built from another task CSV - re-run the "
                                "conversion with this --task-data, or pass the matching --task-data")
        seen.update(keys)
    for key in [k for k in table.rows if k not in seen]:
        row = table.rows.pop(key)
        pid = row.patient_id
        if converted_ids is not None and pid in converted_ids:
            # the conversion keeps a row with no history ([CLS] only), so only task datasets from before it lack one
            table.reject(row.line, pid, "no events before the prediction date, and the task datasets predate keeping "
                         "such rows: re-run the conversion with --task-data to predict them too",
                         "no events before prediction date")
        elif converted_ids is not None:
            table.reject(row.line, pid, f"unknown patient id (not among the converted patients in {where})",
                         "unknown patient id")
        else:
            table.reject(row.line, pid, f"unknown patient id, or no events before the prediction date (not in "
                         f"the task datasets in {where})", "unknown patient id or no events")


def converted_patient_ids(task_paths: dict[str, Path]) -> set[str] | None:
    """Ids in the pretraining datasets beside `<stem>_task_*.pt` (`<stem>_*.pt`), or None if absent."""
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


def load_task_splits(data_dir: str | os.PathLike, task_data: str | os.PathLike, *, num_labels: int,
                     output_dir: str | os.PathLike, on_error: str = "skip",
                     input_path: str | os.PathLike | None = None, vocab=None, max_length: int | None = None,
                     split_seed: int | None = None, train_ratio: float | None = None,
                     pretraining: Pretraining | None = None):
    """The train/val/test task datasets every model reads, plus the vocabulary they are encoded with.

    With a conversion in data_dir (dataset_manifest.json) the task datasets next to it are reused, or
    built with its vocabulary and its split of record when missing or made from another task CSV. Without
    one, fine-tuning (`vocab` given) encodes `input_path` itself into output_dir/task_data/, split as the
    model's `pretraining` conversion was (its manifest), or by `split_seed`/`train_ratio` when no split
    is recorded, with the conversion settings the vocabulary shows (`max_length` None: the conversion's
    default); flags that contradict a split of record are an error. With `pretraining` known, a val
    or test patient the model was pretrained on is refused. Bad task rows are skipped into
    output_dir/task_rejected.csv or raise (`on_error`).
    Returns (splits {name: PatientDataset}, Vocab, provenance dict).
    """
    data_dir, out = Path(data_dir), Path(output_dir)
    table = read_task_csv(task_data, num_labels=num_labels, on_error=on_error)  # the converter gets its rows
    split: SplitRecord | None = read_split_record(data_dir)
    if split is not None:
        resolve_split(split, split_seed, train_ratio)  # the conversion decided; contradicting flags are refused
        paths = task_datasets_for(data_dir, table)
        data_vocab_path = data_dir / "vocab.json"
    elif vocab is not None and input_path is not None and Path(input_path).exists():
        split = resolve_split(pretraining.record if pretraining else None, split_seed, train_ratio)
        print(f"no conversion in {data_dir}; encoding {input_path} with the model's vocabulary, split by "
              f"{split.describe()}", file=sys.stderr)
        data_vocab_path = out / "task_data" / "vocab.json"
        vocab.save(data_vocab_path)
        # the conversion's settings, as the model's vocabulary shows them, split as decided above
        args = ConvertArgs(input=str(input_path), output=str(out / "task_data" / "task.pt"), task_data=str(table.path),
                           seed=split.seed, train_ratio=split.train_ratio, **vocab_settings(vocab))
        if max_length is not None:
            args.max_length = max_length
        paths = build_task_datasets(args, data_vocab_path, table=table)
    else:
        paths = find_task_datasets(data_dir) if data_dir.is_dir() else None
        data_vocab_path = data_dir / "vocab.json"
        if paths is None:
            raise UserError(f"{data_dir}: no converted dataset (dataset_manifest.json); run "
                            "scripts/convert_synthetic_to_dataset.py --input data/synthetic_patients.json "
                            f"--output {data_dir}/synthetic.pt first"
                            + ("" if vocab is None else ", or pass --input with the patients JSON"))
    splits = {s: PatientDataset.load(paths[s]) for s in SPLITS}
    if pretraining is not None:
        check_no_pretraining_leak({s: ds.patient_ids for s, ds in splits.items()},
                                  PatientDataset.load(pretraining.train_path).patient_ids, pretraining)
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
    if table.label_column is not None:
        source["label_column"] = table.label_column
    if table.classes is not None:
        source["label_classes"] = {c: i for i, c in enumerate(table.classes)}
    return splits, (vocab if vocab is not None else data_vocab), source


def rows_without_history(source: dict | None, test_ids: Sequence[str]) -> int | None:
    """How many test rows have no event before their prediction time, for a run's task data (`source`, the
    provenance load_task_splits returns): rows of the test task dataset whose sequence is [CLS] alone (the
    conversion keeps such a label row, scored from age and sex; a row with history has a code and [SEP]
    too). None when that dataset is not found or holds other rows than `test_ids`."""
    path = ((source or {}).get("task_datasets") or {}).get("test")
    if not path or not Path(path).is_file():
        return None
    ds = PatientDataset.load(path)
    if list(ds.patient_ids) != list(test_ids):
        return None
    return int(np.count_nonzero(np.diff(ds.data["offsets"].numpy()) == 1))


def task_prediction_times(source: dict | None, test_ids: Sequence[str]) -> np.ndarray | None:
    """Prediction time per test row (`test_ids`: the test task dataset's patient ids, in its order), in
    microseconds since 1970-01-01, for a run's task data (`source`, the provenance load_task_splits
    returns): a MEDS label's own prediction_time (the dataset's `prediction_times`), else midnight of the
    day the task dataset was cut at (the CSV's prediction_date, or the day after the last event when it
    has none). None when the task datasets or a test patient are not found."""
    path = ((source or {}).get("task_datasets") or {}).get("test")
    if not path or not Path(path).is_file():
        return None
    ds = PatientDataset.load(path)
    if "prediction_times" in ds.data and list(ds.patient_ids) == list(test_ids):
        return ds.data["prediction_times"].numpy().astype(np.int64)
    if "prediction_days" not in ds.data:
        return None
    day = dict(zip(ds.patient_ids, ds.data["prediction_days"].tolist()))
    exact: dict[str, int] = {}
    task = source.get("task_data")
    if task and is_meds_labels(task) and Path(task).exists():   # a dataset from before prediction_times
        rows = read_task_csv(task, on_error="skip", skip_hint=None).rows
        exact = {r.patient_id: r.prediction_time for r in rows.values() if r.prediction_time is not None}
    if any(pid not in day for pid in test_ids):
        return None
    return np.array([exact[pid] if pid in exact else day[pid] * US_PER_DAY for pid in test_ids], dtype=np.int64)
