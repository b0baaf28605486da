"""Conversion: patient records (JSON, JSONL, MEDS: `formats`) and task labels -> the encoded datasets,
vocab.json and a manifest that `exmed_bert.data` reads at training time. `run(ConvertArgs)` is the stage.

What other stages may use is named here (the rest of the package is its inside):
  ConvertArgs, run, convert, convert_patients, output_paths          the conversion
  task_datasets_for, build_task_datasets, vocab_settings             task datasets beside a conversion
  read_task_csv, TaskTable, dataset_keys, is_meds_labels, write_rejects   task labels
  peek_flags, start_early, tune_malloc       the command line's early start of the workers' fork server
Each loads on first use: the modules behind them import numpy and pyarrow (0.2 s), which every command's
--help would pay for, as the config reads `convert.args` (PEP 562 module __getattr__).
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # the same names, for type checkers and readers of the import graph
    from exmed_bert.convert.args import ConvertArgs
    from exmed_bert.convert.conversion import convert, convert_patients, output_paths, run
    from exmed_bert.convert.labels import TaskTable, dataset_keys, is_meds_labels, read_task_csv, write_rejects
    from exmed_bert.convert.processes import peek_flags, start_early, tune_malloc
    from exmed_bert.convert.task_datasets import build_task_datasets, task_datasets_for, vocab_settings

_PUBLIC = {
    "ConvertArgs": "args",
    "run": "conversion", "convert": "conversion", "convert_patients": "conversion", "output_paths": "conversion",
    "task_datasets_for": "task_datasets", "build_task_datasets": "task_datasets", "vocab_settings": "task_datasets",
    "read_task_csv": "labels", "TaskTable": "labels", "dataset_keys": "labels", "is_meds_labels": "labels",
    "write_rejects": "labels",
    "peek_flags": "processes", "start_early": "processes", "tune_malloc": "processes",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
