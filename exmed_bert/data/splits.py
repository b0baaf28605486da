"""Patient-level train/val/test assignment from a stable hash of (seed, patient id), and the split of
record: the (seed, train ratio) a conversion wrote in its manifest, which every later stage reads.

A patient's split depends only on its own id, the seed and the ratio, so adding patients never moves
existing ones, and a task dataset's splits are the same patients' splits as pretraining.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from exmed_bert.errors import UserError
from exmed_bert.io import file_fingerprint

SPLITS = ("train", "val", "test")
_SCALE = float(1 << 64)
MANIFEST = "dataset_manifest.json"
# the conversion's split settings when none is given (ConvertArgs' defaults), and for a conversion that
# recorded none
DEFAULT_SEED, DEFAULT_TRAIN_RATIO = 42, 0.8
RUN_CONFIG = "run_config.json"


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


# ---------------------------------------------------------------------------------------------
# the split of record


@dataclass(frozen=True)
class SplitRecord:
    """How patients were assigned to splits, and where that decision was written down."""

    seed: int
    train_ratio: float
    source: str  # the manifest that recorded it, or the flags that chose it

    def describe(self) -> str:
        return f"seed {self.seed}, train ratio {self.train_ratio:g}, from {self.source}"


def read_split_record(data_dir: str | os.PathLike) -> SplitRecord | None:
    """The split written in `data_dir`/dataset_manifest.json by the conversion, or None without one."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        args = json.loads(path.read_text(encoding="utf-8")).get("args") or {}
        return SplitRecord(int(args.get("seed", DEFAULT_SEED)),
                           float(args.get("train_ratio", DEFAULT_TRAIN_RATIO)), str(path))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a readable conversion manifest ({type(e).__name__}); "
                        "re-run scripts/convert_synthetic_to_dataset.py") from None


def resolve_split(record: SplitRecord | None, split_seed: int | None = None,
                  train_ratio: float | None = None) -> SplitRecord:
    """The split of record when there is one (flags, when given, must agree with it); else the flags,
    defaulting to the converter's seed 42 and ratio 0.8."""
    if record is None:
        return SplitRecord(DEFAULT_SEED if split_seed is None else int(split_seed),
                           DEFAULT_TRAIN_RATIO if train_ratio is None else float(train_ratio),
                           "--split-seed/--train-ratio (no conversion records a split)")
    for flag, given, recorded, convert_flag in (("--split-seed", split_seed, record.seed, "--seed"),
                                                ("--train-ratio", train_ratio, record.train_ratio, "--train-ratio")):
        if given is not None and not math.isclose(float(given), float(recorded)):
            raise UserError(f"{flag} {given} differs from the split of record ({record.describe()}); drop {flag} so "
                            f"every stage reads the same split, or re-run the conversion with {convert_flag} {given}")
    return record


# ---------------------------------------------------------------------------------------------
# the conversion a model was pretrained on


@dataclass(frozen=True)
class Pretraining:
    """The conversion a pretrained model learned from, as its run's run_config.json records it."""

    data_dir: Path
    train_path: Path            # <dataset_name>_train.pt: the patients the model has seen
    record: SplitRecord | None  # None when that folder has no manifest
    run_config: Path


def find_pretraining(model_dir: str | os.PathLike, _depth: int = 0) -> tuple[Pretraining | None, str | None]:
    """(what the model was pretrained on, None), or (None, a note saying why that is unknown).

    A checkpoint folder holds no data provenance; the run folder above it does (run_config.json:
    args.data_dir and args.dataset_name). A fine-tuning run's record points at its own --model-path,
    which is followed. A relative data_dir is read relative to the working directory, as it was written.
    """
    model_dir = Path(model_dir)
    found = [p for p in (model_dir / RUN_CONFIG, model_dir.parent / RUN_CONFIG) if p.is_file()]
    if not found:
        return None, f"no {RUN_CONFIG} beside {model_dir} records its pretraining data"
    path = found[0]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        args = doc.get("args") or {}
    except (OSError, ValueError, AttributeError):
        return None, f"{path} is not readable JSON, so the pretraining data is unknown"
    if "dataset_name" not in args and doc.get("model_path") and _depth < 4:  # a fine-tuning run: follow it
        return find_pretraining(doc["model_path"], _depth + 1)
    if "dataset_name" not in args or "data_dir" not in args:
        return None, f"{path} does not record a pretraining --data-dir"
    data_dir = Path(args["data_dir"])
    train = data_dir / f"{args['dataset_name']}_train.pt"
    if not train.is_file():
        return None, f"the pretraining data recorded in {path} ({train}) is not there"
    recorded = (doc.get("data_fingerprint") or {}).get("train")
    if recorded and file_fingerprint(train) != recorded:
        return None, f"{train} changed since the model was pretrained on it ({path} has another fingerprint)"
    return Pretraining(data_dir, train, read_split_record(data_dir), path), None


def check_no_pretraining_leak(split_ids: Mapping[str, Sequence[str]], pretrain_train_ids: Iterable[str],
                              pretraining: Pretraining) -> None:
    """Refuse a task split whose val or test patients include patients the model was pretrained on."""
    seen = set(pretrain_train_ids)
    for split in ("test", "val"):
        ids = split_ids.get(split, ())
        hits = [p for p in ids if p in seen]
        if hits:
            how = (f"its --seed {pretraining.record.seed} and --train-ratio {pretraining.record.train_ratio:g}"
                   if pretraining.record else "the same --seed and --train-ratio")
            raise UserError(f"{len(hits)} of {len(ids)} patients in the fine-tuning {split} split (e.g. {hits[0]!r}) are "
                            f"in the pretraining train split ({pretraining.train_path}), so {split} scores would be "
                            f"inflated; fine-tune on that conversion (--data-dir {pretraining.data_dir}) or on one "
                            f"converted with {how}, and leave --split-seed/--train-ratio unset")
