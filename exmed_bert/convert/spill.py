"""Per-token arrays of a conversion kept in files of a temporary folder instead of in RAM.

The pass appends each encoded chunk's token arrays (input ids, types, visits, ages, days) to one file per
(split, array); writing a split streams them back into its dataset file by chunks (`Spill.chunks`). So
neither the pass nor the writer holds more than a chunk of tokens at a time.

With --workers, each worker spills its piece's arrays into files of the same folder and hands over only
their names (`Spill.export`); the main process adopts them in input order (`Spill.adopt`), with the map
from the worker's provisional token ids to its own, applied when the split is written. The tokens of a
piece never pass through the main process's memory or the pipe from the worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exmed_bert.data.ptfile import Chunks
from exmed_bert.errors import UserError


@dataclass
class Segment:
    """Elements [0, length) of a spill file, in order; `lut` (input ids only) maps the ids stored there."""
    path: Path
    length: int = 0
    lut: np.ndarray | None = None


class Spill:
    def __init__(self, folder: str | os.PathLike, tag: str):
        self.folder, self.tag = Path(folder), tag
        self._segments: dict[tuple[int, str], list[Segment]] = {}
        self._open: dict[tuple[int, str], object] = {}   # the file the next `append` extends, per (split, key)
        self._dtypes: dict[str, np.dtype] = {}
        self._n = 0

    def _dtype(self, key: str, dtype) -> None:
        dtype = np.dtype(dtype)
        self._dtypes.setdefault(key, dtype)
        if dtype != self._dtypes[key]:
            raise TypeError(f"{key}: chunks of different dtypes ({dtype} after {self._dtypes[key]})")

    def append(self, split: int, key: str, arr: np.ndarray) -> None:
        self._dtype(key, arr.dtype)
        try:
            f = self._open.get((split, key))
            if f is None:
                self._n += 1
                seg = Segment(self.folder / f"{self.tag}_{split}_{key}_{self._n}.bin")
                self._segments.setdefault((split, key), []).append(seg)
                f = self._open[(split, key)] = open(seg.path, "wb")
            f.write(memoryview(np.ascontiguousarray(arr)).cast("B"))
            self._segments[(split, key)][-1].length += len(arr)
        except OSError as e:
            raise UserError(f"{self.folder}: cannot write the conversion's temporary token files "
                            f"({e.strerror or e}); free disk space next to the output (about 13 bytes per "
                            "token, twice that while the datasets are written)") from None

    def _close(self, split: int, key: str) -> None:
        f = self._open.pop((split, key), None)
        if f is not None:
            f.close()

    def export(self) -> dict:
        """{(split, key): (dtype str, [(path, length), ...])} of everything spilled, files closed: what a worker
        hands to the main process's `adopt`. The files now belong to the receiver."""
        for split, key in list(self._open):
            self._close(split, key)
        out = {(s, k): (self._dtypes[k].str, [(str(g.path), g.length) for g in segs])
               for (s, k), segs in self._segments.items()}
        self._segments.clear()
        return out

    def adopt(self, exported: dict, lut: np.ndarray | None = None, lut_key: str = "input_ids") -> None:
        """Append another spill's `export` after everything spilled so far; `lut` maps the ids of `lut_key`."""
        for (split, key), (dtype, segs) in exported.items():
            self._dtype(key, dtype)
            self._close(split, key)   # a later append starts a new file after the adopted ones
            self._segments.setdefault((split, key), []).extend(
                Segment(Path(p), n, lut if key == lut_key else None) for p, n in segs)

    def chunks(self, split: int, key: str, dtype, step: int = 1 << 18, lut: np.ndarray | None = None) -> Chunks:
        """All chunks of (split, key), in order, as a `Chunks` of `dtype` that reads `step` elements at a
        time (the writer streams it into the dataset file); each file is deleted once read to its end.
        `lut`, if given, maps the ids after each segment's own map: the two are composed once per segment,
        so every element is looked up once."""
        self._close(split, key)
        segs = self._segments.pop((split, key), [])
        stored = self._dtypes.get(key)

        def read():
            for g in segs:
                m = g.lut if lut is None else lut if g.lut is None else lut[g.lut]
                with open(g.path, "rb") as fh:
                    for start in range(0, g.length, step):
                        a = np.fromfile(fh, dtype=stored, count=min(step, g.length - start))
                        yield a if m is None else m[a]
                g.path.unlink()

        return Chunks(dtype, sum(g.length for g in segs), read)

    def take(self, split: int, key: str, dtype=None) -> np.ndarray:
        """All chunks of (split, key), joined, in a fresh array; its files are deleted."""
        c = self.chunks(split, key, self._dtypes.get(key, np.dtype(dtype or np.int32)))
        parts = list(c.chunks())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=c.dtype)

    def discard(self) -> None:
        """Delete every file still spilled (a result that will not be used)."""
        for split, key in list(self._open):
            self._close(split, key)
        for segs in self._segments.values():
            for g in segs:
                g.path.unlink(missing_ok=True)
        self._segments.clear()

    def close(self) -> None:
        for split, key in list(self._open):
            self._close(split, key)


def discard_exported(exported: dict) -> None:
    """Delete the files of a `Spill.export` that will not be adopted."""
    for _, segs in exported.values():
        for p, _ in segs:
            Path(p).unlink(missing_ok=True)


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
