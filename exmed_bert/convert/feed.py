"""Feeding one piece of input to a conversion pass (`Intake`): a block of JSONL lines or a MEDS shard. The
same functions run in the main process and in conversion workers (exmed_bert.convert.workers).
"""

from __future__ import annotations

from pathlib import Path

from exmed_bert.convert.fastpath import fast_block
from exmed_bert.convert.intake import Intake
from exmed_bert.convert.meds import MedsReader
from exmed_bert.convert.records import _fast_loads, block_records

MEDS_SPLITS = {"train": 0, "tuning": 1, "held_out": 2}   # MEDS split name -> our split index


def meds_split_of(splits: dict[str, str]):
    """patient_id -> split index from a MEDS subject split table ({str(subject_id): split name}); -1 for a
    subject in any other split, or in none (left out of every split)."""
    def split_of(pid: str) -> int:
        return MEDS_SPLITS.get(splits.get(str(pid), ""), -1)

    return split_of


def feed_jsonl_block(run: Intake, path: Path, block, table) -> None:
    """One block of JSONL lines through `run`: by columns when pyarrow parsed it (`table`), else by record."""
    fb = fast_block(table, run.parser)
    if fb is None:
        for obj in block_records(path, block):
            run.record(obj)
        return
    lines: list = []
    loads = _fast_loads()[0]

    def record_of(i: int):
        if not lines:
            lines.extend(block.data.split(b"\n"))
        return loads(lines[i])

    run.block(fb, record_of)


def feed_meds_file(run: Intake, reader: MedsReader, file: Path, fast: bool = True, part=None) -> None:
    """One MEDS shard (or a `shard_parts.ShardPart` of it) through `run`: columnar blocks (fast), or one patient
    dict at a time."""
    if not fast:
        for obj in reader._read_file(file, reader._patients, part):
            run.record(obj)
        return
    for item in reader.blocks(run.parser, [file], part):
        if isinstance(item, dict):
            run.record(item)
        else:
            run.block(item, item.record)
