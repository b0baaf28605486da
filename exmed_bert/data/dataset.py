"""PatientDataset: the encoded `*.pt` file (a plain dict of tensors) and per-patient indexing.

Loading uses `torch.load(weights_only=True, mmap=True)`: no code from the file runs and the token
arrays stay on disk until touched. `ds[i]` slices views, never copies whole tensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from exmed_bert.data.layout import (  # noqa: F401 - re-exported: the dataset's names live here too
    EPOCH_ORDINAL, FORMAT, PATIENT_KEYS, SEQ_KEYS, TOKEN_KEYS, UNKNOWN_BIRTH, VERSION, dataset_dict, day_to_iso)
from exmed_bert.data.ptfile import write_pt
from exmed_bert.errors import UserError

REQUIRED = (*TOKEN_KEYS, "offsets", *PATIENT_KEYS, "los_offsets", "los_days", "patient_ids")
# `los_start_days` (each stay's admission day) came later without a version bump: a pretraining dataset
# converted before it loads (stay dates unknown, `stay_starts` is None); a task dataset from then is
# refused, since its stays were not cut at the prediction date (they leak the outcome).


class PatientDataset(torch.utils.data.Dataset):
    """Patients of one split. `data` follows the table in docs/ARCHITECTURE.md ("Encoded dataset")."""

    def __init__(self, data: dict, path: str | os.PathLike | None = None):
        self.data = data
        self.path = Path(path) if path is not None else None
        offsets = data["offsets"].numpy()
        self.offsets = offsets
        self.lengths = np.diff(offsets)                  # [N] tokens per patient, [CLS] and [SEP]s included
        self.patient_ids: list[str] = data["patient_ids"]
        self.has_labels = "labels" in data
        self.plos_los = _max_per_segment(data["los_offsets"].numpy(), data["los_days"].numpy())

    # -- file ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "PatientDataset":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: dataset not found; run scripts/convert_synthetic_to_dataset.py first")
        try:
            data = torch.load(path, weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - truncated zip, pickle with code, plain garbage: all bad input
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise UserError(f"{path}: not an ExMed-BERT dataset or a damaged file ({reason}); "
                            "re-run scripts/convert_synthetic_to_dataset.py") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path}: not an ExMed-BERT dataset (format should be '{FORMAT}'); "
                            "re-run scripts/convert_synthetic_to_dataset.py")
        if data.get("version") != VERSION:
            raise UserError(f"{path}: dataset version {data.get('version')} is not supported by this "
                            f"release (expected {VERSION}); re-run the conversion")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise UserError(f"{path}: damaged ExMed-BERT dataset (missing {', '.join(missing)}); re-run the conversion")
        n, t = len(data["patient_ids"]), len(data["input_ids"])
        if "labels" in data and "los_start_days" not in data:
            raise UserError(f"{path}: task dataset converted before hospital stays were cut at the prediction "
                            "date (no los_start_days); re-run scripts/convert_synthetic_to_dataset.py --task-data ...")
        s = len(data["los_days"])
        if len(data["offsets"]) != n + 1 or int(data["offsets"][-1]) != t or \
                any(len(data[k]) != t for k in TOKEN_KEYS) or any(len(data[k]) != n for k in PATIENT_KEYS) or \
                len(data["los_offsets"]) != n + 1 or int(data["los_offsets"][-1]) != s or \
                len(data.get("los_start_days", data["los_days"])) != s:
            raise UserError(f"{path}: damaged ExMed-BERT dataset (array lengths disagree); re-run the conversion")
        return cls(data, path)

    def check_vocab(self, vocab, vocab_path: str | os.PathLike = "vocab.json") -> None:
        """Refuse a dataset encoded with another vocabulary (e.g. after an interrupted re-conversion)."""
        recorded = self.data.get("vocab_fingerprint")
        if recorded is not None and recorded != vocab.fingerprint():
            raise UserError(f"{self.path}: encoded with a different vocabulary than {vocab_path} (an interrupted "
                            "or mixed conversion?); re-run scripts/convert_synthetic_to_dataset.py")

    def save(self, path: str | os.PathLike) -> None:
        write_pt(path, self.data)

    # -- indexing --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if i < 0:
            i += len(self)
        s, e = int(self.offsets[i]), int(self.offsets[i + 1])
        d = self.data
        item = {k: d[k][s:e] for k in SEQ_KEYS}
        item["sex"] = int(d["sex"][i])
        item["plos_los"] = int(self.plos_los[i])
        item["index"] = i
        if self.has_labels:
            item["label"] = int(d["labels"][i])
        return item

    def stays(self, i: int) -> np.ndarray:
        """Lengths of stay (days) of patient i's hospitalisations (in a task split: as known on the
        prediction date)."""
        lo = self.data["los_offsets"]
        return self.data["los_days"][int(lo[i]):int(lo[i + 1])].numpy()

    def stay_starts(self, i: int) -> np.ndarray | None:
        """Admission days (days since 1970) of patient i's stays, parallel to `stays(i)`; None for a
        dataset converted before admission days were kept."""
        if "los_start_days" not in self.data:
            return None
        lo = self.data["los_offsets"]
        return self.data["los_start_days"][int(lo[i]):int(lo[i + 1])].numpy()

    def plos_labels(self, threshold: int) -> np.ndarray:
        """[N] 1 where any stay lasted `threshold` days or more."""
        return (self.plos_los >= threshold).astype(np.int64)


def _max_per_segment(offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Max of values[offsets[i]:offsets[i+1]] per segment; 0 for an empty segment."""
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.int64)
    sizes = np.diff(offsets)
    nonempty = sizes > 0
    if nonempty.any():
        out[nonempty] = np.maximum.reduceat(values.astype(np.int64), offsets[:-1][nonempty])
    return out


def build_dataset_dict(parts: dict, patient_ids: list[str], labels=None, prediction_days=None) -> dict:
    """The on-disk dict (layout.dataset_dict) with tensors, as `torch.load` gives it back."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in dataset_dict(parts, patient_ids, labels, prediction_days).items()}
