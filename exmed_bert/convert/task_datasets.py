"""Task datasets beside an existing conversion: `<stem>_task_{train,val,test}.pt` built with its vocabulary and
split of record (`build_task_datasets`), or reused when they were made from the same task rows by the
same cut rule (`task_datasets_for`, which fine-tuning and the baselines call through exmed_bert.tasks).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from exmed_bert.codes import OTHER_SYSTEM
from exmed_bert.convert.conversion import convert_patients, output_paths
from exmed_bert.convert.labels import TaskTable, cut_rule, read_task_csv
from exmed_bert.convert.value_bins import BIN_SEPARATOR
from exmed_bert.data.splits import SPLITS, read_split_record
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError


def build_task_datasets(input: str | os.PathLike, task: str | os.PathLike | TaskTable,
                        vocab_path: str | os.PathLike, output: str | os.PathLike, *, max_length: int = 512,
                        train_ratio: float = 0.8, seed: int = 42, on_error: str = "skip", progress: bool = True,
                        split_source: str = "auto", other_codes: str | None = None,
                        value_bins: int | None = None) -> dict[str, Path]:
    """Write `<stem>_task_{train,val,test}.pt` for an existing conversion (same vocab, same splits).

    Its manifest records the split (seed, train_ratio) it was cut with, like a conversion's. other_codes
    None: "keep" when the vocabulary holds "other:" tokens (the conversion kept them), else "drop".
    value_bins None: the largest bin of the vocabulary's "...|q<k>" tokens (every binned code has a
    value in its top bin), else 0. Edges are learned again from the same train split: the same edges."""
    vocab = Vocab.load(vocab_path)
    if other_codes is None:
        other_codes = "keep" if any(t.startswith(f"{OTHER_SYSTEM}:") for t in vocab.tokens) else "drop"
    if value_bins is None:
        value_bins = max((int(k) for t in vocab.tokens if t.startswith(f"{OTHER_SYSTEM}:")
                          for _, sep, k in [t.rpartition(BIN_SEPARATOR)] if sep and k.isdigit()), default=0)
    convert_patients(input, output, max_length=max_length, train_ratio=train_ratio, seed=seed,
                     task_data=task, on_error=on_error, vocab=vocab, pretraining=False,
                     progress=progress, split_source=split_source, other_codes=other_codes, value_bins=value_bins,
                     args={"input": str(input), "output": str(output),
                           "task_data": str(getattr(task, "path", task)), "vocab": str(vocab_path),
                           "max_length": max_length, "train_ratio": train_ratio, "seed": seed, "on_error": on_error,
                           "split_source": split_source, "other_codes": other_codes, "value_bins": value_bins})
    paths = output_paths(output, task=True)
    return {s: paths[s] for s in SPLITS}


def task_datasets_for(data_dir: str | os.PathLike, task: str | os.PathLike | TaskTable) -> dict[str, Path]:
    """Task datasets for `task` (a task CSV, or its accepted rows) next to the conversion in `data_dir`,
    built when missing or made from other rows. Reads input, max_length and the split of record (seed,
    train_ratio) from dataset_manifest.json."""
    data_dir = Path(data_dir)
    mpath = data_dir / "dataset_manifest.json"
    split = read_split_record(data_dir)
    if split is None:
        raise UserError(f"{mpath}: not found; run scripts/convert_synthetic_to_dataset.py first")
    man = json.loads(mpath.read_text(encoding="utf-8"))
    a = man.get("args", {})
    output = data_dir / Path(a.get("output", "synthetic.pt")).name
    paths = output_paths(output, task=True)
    if not isinstance(task, TaskTable):
        task = read_task_csv(task, skip_hint=None)
    fp = task.fingerprint
    rule = cut_rule(task, meds="meds_kept_codes" in man)   # from the manifest: the input may have moved
    for m in (man, _read_json(paths["manifest"])):
        t = (m or {}).get("task") or {}
        if fp and t.get("task_fingerprint") == fp and t.get("cut") == rule and all(
                paths[s].is_file() for s in t.get("splits", {})):
            return {s: paths[s] for s in SPLITS if paths[s].is_file()}
    if not Path(man["input"]).exists():
        raise UserError(f"{man['input']}: the input of this conversion is gone; re-run the conversion with "
                        f"--task-data {task.path}")
    return build_task_datasets(man["input"], task, data_dir / "vocab.json", output,
                               max_length=a.get("max_length", 512), train_ratio=split.train_ratio,
                               seed=split.seed, on_error=a.get("on_error", "skip"),
                               split_source=man.get("split_source", "hash"),
                               other_codes=man.get("other_codes", a.get("other_codes", "drop")),
                               value_bins=a.get("value_bins", 0))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
