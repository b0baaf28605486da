"""Patient-level train/val/test assignment from a stable hash of (seed, patient id).

A patient's split depends only on its own id, the seed and the ratio, so adding patients never moves
existing ones, and a task dataset's splits are the same patients' splits as pretraining.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")
_SCALE = float(1 << 64)


def split_fraction(patient_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, patient id)."""
    digest = hashlib.blake2b(f"{seed}:{patient_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def split_of(patient_id: str, seed: int = 42, train_ratio: float = 0.8) -> str:
    """'train' for a `train_ratio` share of ids; the rest is halved between 'val' and 'test'."""
    u = split_fraction(patient_id, seed)
    if u < train_ratio:
        return "train"
    return "val" if u < train_ratio + (1.0 - train_ratio) / 2 else "test"


def split_index(patient_id: str, seed: int = 42, train_ratio: float = 0.8) -> int:
    """Like `split_of`, as an index into SPLITS (0 train, 1 val, 2 test)."""
    u = split_fraction(patient_id, seed)
    if u < train_ratio:
        return 0
    return 1 if u < train_ratio + (1.0 - train_ratio) / 2 else 2
