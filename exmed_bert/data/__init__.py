"""Patient records -> encoded datasets: reading (JSON/JSONL/MEDS), validation, vocabulary, encoding,
splits, PatientDataset, masking and collation. Names are imported lazily so torch loads only when needed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PatientDataset": "dataset", "Vocab": "vocab", "SPECIAL_TOKENS": "vocab", "split_of": "splits",
    "mask_tokens": "masking", "pad_batch": "collate", "PaddedCollator": "collate",
    "convert_patients": "convert", "build_task_datasets": "convert", "task_datasets_for": "convert",
    "output_paths": "convert", "iter_patients": "records", "read_task_csv": "task",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"exmed_bert.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'exmed_bert.data' has no attribute {name!r}")
