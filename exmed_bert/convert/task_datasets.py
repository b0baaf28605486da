"""Task datasets beside an existing conversion: `<stem>_task_{train,val,test}.pt` built with its vocabulary and
split of record (`build_task_datasets`), or reused when they were made from the same task rows, by the
same cut rule and with the same conversion settings (`task_datasets_for`, which fine-tuning and the
baselines call through `exmed_bert.convert`).

Every manifest records the `ConvertArgs` it was made with (`dataclasses.asdict`); the settings a rebuild
would use are the conversion's own, read back from its manifest, so no default is written down twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from exmed_bert.codes import OTHER_SYSTEM
from exmed_bert.convert import formats
from exmed_bert.convert.args import NOT_IN_DATA, ConvertArgs
from exmed_bert.convert.conversion import convert, output_paths
from exmed_bert.convert.labels import TaskTable, cut_rule, read_task_csv
from exmed_bert.convert.value_bins import BIN_SEPARATOR
from exmed_bert.data.splits import SPLITS, read_split_record
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError


def build_task_datasets(args: ConvertArgs, vocab_path: str | os.PathLike, *, table: TaskTable | None = None,
                        progress: bool = True) -> dict[str, Path]:
    """Write `<stem>_task_{train,val,test}.pt` of args.output with the vocabulary at `vocab_path` (the task
    rows of args.task_data, or `table` when they are read already); returns their paths."""
    convert(args, table=table, vocab=Vocab.load(vocab_path), progress=progress)
    paths = output_paths(args.output, task=True)
    return {s: paths[s] for s in SPLITS}


def vocab_settings(vocab: Vocab) -> dict:
    """The conversion settings a vocabulary shows it was made with, for task datasets encoded later with
    it alone: other_codes "keep" when it holds "other:" tokens, and value_bins the largest bin of its
    "...|q<k>" tokens (every binned code has a value in its top bin; edges are learned again from the
    same train split, so they are the same)."""
    other = [t for t in vocab.tokens if t.startswith(f"{OTHER_SYSTEM}:")]
    bins = max((int(k) for t in other for _, sep, k in [t.rpartition(BIN_SEPARATOR)] if sep and k.isdigit()),
               default=0)
    return {"other_codes": "keep" if other else "drop", "value_bins": bins}


def recorded_args(manifest: dict) -> ConvertArgs:
    """The settings a manifest was made with: its recorded `ConvertArgs` (fields it lacks take their
    defaults), with the split source it decided on (auto -> meds or hash), so a rebuild splits the same."""
    known = {f.name for f in dataclasses.fields(ConvertArgs)}
    args = ConvertArgs(**{k: v for k, v in (manifest.get("args") or {}).items() if k in known})
    return dataclasses.replace(args, split_source=manifest.get("split_source", args.split_source))


def same_data(a: ConvertArgs, b: ConvertArgs) -> bool:
    """Whether two settings make the same datasets (fields in NOT_IN_DATA aside)."""
    x, y = dataclasses.asdict(a), dataclasses.asdict(b)
    return all(x[k] == y[k] for k in x if k not in NOT_IN_DATA)


def task_datasets_for(data_dir: str | os.PathLike, task: str | os.PathLike | TaskTable) -> dict[str, Path]:
    """Task datasets for `task` (a task CSV or MEDS labels, or their accepted rows) next to the conversion in
    `data_dir`: reused when a manifest there says they were made from the same rows (fingerprint), by the
    same cut rule and with the conversion's settings; else built with its vocabulary and settings."""
    data_dir = Path(data_dir)
    mpath = data_dir / "dataset_manifest.json"
    if read_split_record(data_dir) is None:
        raise UserError(f"{mpath}: not found; run scripts/convert_synthetic_to_dataset.py first")
    man = json.loads(mpath.read_text(encoding="utf-8"))
    if not isinstance(task, TaskTable):
        task = read_task_csv(task, on_error="skip", skip_hint=None)   # bad rows: counted skips, as in training
    made = recorded_args(man)
    want = dataclasses.replace(made, input=man["input"], output=str(data_dir / Path(made.output).name),
                               task_data=str(task.path))
    paths = output_paths(want.output, task=True)
    rule = cut_rule(task, formats.event_times_in(man))   # from the manifest: the input may have moved
    for m in (man, _read_json(paths["manifest"])):
        t = (m or {}).get("task") or {}
        if task.fingerprint and t.get("task_fingerprint") == task.fingerprint and t.get("cut") == rule and all(
                paths[s].is_file() for s in t.get("splits", {})) and same_data(recorded_args(m), want):
            return {s: paths[s] for s in SPLITS if paths[s].is_file()}
    if not Path(man["input"]).exists():
        raise UserError(f"{man['input']}: the input of this conversion is gone; re-run the conversion with "
                        f"--task-data {task.path}")
    return build_task_datasets(want, data_dir / "vocab.json", table=task)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
