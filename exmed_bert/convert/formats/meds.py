"""MEDS: a dataset root, its data/ folder or one Parquet file (`convert.meds.MedsReader`). Each shard is
read by columns into `MedsBlock`s (`Intake.block`); shards are the pieces of `--workers`, and a large
shard is cut into row-group parts when there are fewer shards than twice the workers (`shard_parts`).
MEDS brings what JSON has not: event times, numeric values (--value-bins), the subject splits of
metadata/subject_splits.parquet, and counts of the rows read and left per code family for the manifest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from exmed_bert.convert.args import ConvertArgs
from exmed_bert.convert.formats.base import Source
from exmed_bert.convert.meds import MedsReader
from exmed_bert.convert.report import families
from exmed_bert.convert.shard_parts import ShardPart, shard_parts
from exmed_bert.convert.value_bins import learn_edges

MEDS_SPLITS = {"train": 0, "tuning": 1, "held_out": 2}   # MEDS split name -> our split index
# a shard is cut into parts of at least this many rows (a part may read one extra row group at its start)
MIN_PART_ROWS = 500_000


@dataclass
class Shard:
    """One piece: a shard file, or a row-group part of one."""
    file: str
    part: ShardPart | None = None


class MedsSource(Source):
    event_times = True
    reads_values = True
    subjects_span_files = True

    def __init__(self, path: Path, args: ConvertArgs, times: bool = False):
        super().__init__(path, args, times)
        self.other_codes, self.times = args.other_codes, times
        self.value_edges: dict = {}     # --value-bins: {code: quantile edges}, learned before the pass
        self.batch_rows = MedsReader.batch_rows
        self._reader = None
        self._reader = self.reader   # opened now: a missing or malformed input is reported before any work

    @staticmethod
    def claims(path: Path) -> bool:
        return path.is_dir() or path.suffix.lower() == ".parquet"

    @property
    def reader(self) -> MedsReader:
        """The reader, opened once per process (a worker opens its own on its first piece)."""
        if self._reader is None:
            r = MedsReader(self.path, other_codes=self.other_codes)
            r.event_times, r.value_edges, r.batch_rows = self.times, self.value_edges, self.batch_rows
            self._reader = r
        return self._reader

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}   # a worker gets the settings, not this process's reader

    # -- reading ----------------------------------------------------------------------------------------
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.reader.files)

    def pieces(self, workers: int) -> list[Shard]:
        """The shards in order; when there are fewer than two per worker, shards are cut into row-group
        parts (`shard_parts`) of about rows / (2 x workers) rows, so every worker has work."""
        files = self.reader.files
        if workers == 1 or len(files) >= 2 * workers:
            return [Shard(str(f)) for f in files]
        rows = {f: _rows(f) for f in files}
        per = max(MIN_PART_ROWS, sum(rows.values()) // (2 * workers))
        out = []
        for f in files:
            parts = shard_parts(f, per) if rows[f] >= 2 * per else None
            out += [Shard(str(f), p) for p in parts] if parts else [Shard(str(f))]
        return out

    def feed(self, run, piece: Shard) -> None:
        """A shard (or part) as columnar blocks; a piece whose subject ids are not plain integers or text
        comes as patient dicts (`MedsReader.blocks`)."""
        for item in self.reader.blocks(run.parser, [Path(piece.file)], piece.part):
            if isinstance(item, dict):
                run.record(item)
            else:
                run.block(item, item.record)

    def records(self) -> Iterator[dict]:
        return iter(self.reader)

    # -- what MEDS adds ---------------------------------------------------------------------------------
    def subject_splits(self) -> "MedsSplits | None":
        splits = self.reader.subject_splits
        return MedsSplits(splits) if splits is not None else None

    def learn_value_bins(self, is_train, bins: int, seed: int) -> int:
        self.value_edges = self.reader.value_edges = learn_edges(self.reader, is_train, bins, seed=seed)
        return len(self.value_edges)

    @property
    def ignored(self) -> Counter:
        return self.reader.ignored

    def tally(self) -> tuple[Counter, Counter, int]:
        r = self.reader
        out = (Counter(r.ignored), Counter(r.kept), r.duplicates)
        r.ignored.clear()
        r.kept.clear()
        r.duplicates = 0
        return out

    def add_tally(self, tally: tuple[Counter, Counter, int]) -> None:
        self.reader.ignored.update(tally[0])
        self.reader.kept.update(tally[1])
        self.reader.duplicates += tally[2]

    def report(self) -> dict:
        r = self.reader
        out = {"meds_kept_codes": dict(r.kept.most_common(50)), "meds_ignored_codes": dict(r.ignored.most_common(50)),
               "meds_duplicate_rows_dropped": r.duplicates}
        if r.dataset_info is not None:
            out["meds_dataset"] = r.dataset_info
        return out

    @staticmethod
    def made(manifest: dict) -> bool:
        return "meds_kept_codes" in manifest

    def rejected_hint(self) -> str:
        if not self.reader.ignored:
            return ""
        return (f"; the largest ignored code families were {families(dict(self.reader.ignored), 3)}, which the "
                "converter does not read (it reads diagnoses, drugs and procedures of the code systems in "
                "docs/DATASET.md, 'MEDS code forms'; --other-codes keep reads the others as tokens)")


@dataclass
class MedsSplits:
    """metadata/subject_splits.parquet: MEDS `train` -> train, `tuning` -> val, `held_out` -> test; a subject
    in any other split, or in none, is left out of every split (so no held-out or unknown subject can reach
    pretraining)."""
    splits: dict   # {str(subject_id): MEDS split name}

    def split_of(self, pid: str) -> int:
        return MEDS_SPLITS.get(self.splits.get(str(pid), ""), -1)

    def report(self, left_out: int) -> dict:
        return {"meds_subject_splits": dict(sorted(Counter(self.splits.values()).items())),
                "patients_outside_the_meds_splits": left_out}


def _rows(path) -> int:
    """Rows of a Parquet file from its footer; 0 if unreadable (its piece then reports why, in order)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return 0
