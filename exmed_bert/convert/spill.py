"""Per-token arrays of a conversion kept in files of a temporary folder instead of in RAM.

The pass appends each encoded chunk's token arrays (input ids, types, visits, ages, days) to one file per
(split, array); writing a split reads its arrays back, one split at a time. So the pass holds only the
chunk in hand, and the peak is about the largest split's tokens (13 bytes each), not all of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from exmed_bert.errors import UserError


class Spill:
    def __init__(self, folder: str | os.PathLike, tag: str):
        self.folder, self.tag = Path(folder), tag
        self._files: dict[tuple[int, str], object] = {}
        self._dtypes: dict[str, np.dtype] = {}

    def _path(self, split: int, key: str) -> Path:
        return self.folder / f"{self.tag}_{split}_{key}.bin"

    def append(self, split: int, key: str, arr: np.ndarray) -> None:
        self._dtypes.setdefault(key, arr.dtype)
        if arr.dtype != self._dtypes[key]:
            raise TypeError(f"{key}: chunks of different dtypes ({arr.dtype} after {self._dtypes[key]})")
        try:
            f = self._files.get((split, key))
            if f is None:
                f = self._files[(split, key)] = open(self._path(split, key), "wb")
            f.write(memoryview(np.ascontiguousarray(arr)).cast("B"))
        except OSError as e:
            raise UserError(f"{self.folder}: cannot write the conversion's temporary token files "
                            f"({e.strerror or e}); free disk space next to the output (about 13 bytes per "
                            "token, twice that while the datasets are written)") from None

    def take(self, split: int, key: str, dtype=None) -> np.ndarray:
        """All chunks of (split, key), joined, in a fresh array; its file is deleted."""
        f = self._files.pop((split, key), None)
        if f is None:
            return np.zeros(0, dtype=self._dtypes.get(key, dtype or np.int32))
        f.close()
        path = self._path(split, key)
        arr = np.fromfile(path, dtype=self._dtypes[key])
        path.unlink()
        return arr

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def spill_folder(parent: Path):
    """A temporary folder for spills in `parent` (`.converting-<pid>-<random>.tmp`), removed on exit; folders
    left by killed conversions (their process is gone) are removed first. Returns a context manager."""
    if os.name == "posix":  # os.kill(pid, 0) only probes on POSIX
        for old in parent.glob(".converting-*-*.tmp"):
            try:
                os.kill(int(old.name.split("-")[1]), 0)
            except ProcessLookupError:
                shutil.rmtree(old, ignore_errors=True)
            except (ValueError, PermissionError, OSError):
                pass
    return tempfile.TemporaryDirectory(prefix=f".converting-{os.getpid()}-", suffix=".tmp", dir=parent)
