"""JSONL, one patient per line: read in blocks of whole lines (`records.iter_jsonl_blocks`), each parsed by
pyarrow into columns and taken by the columnar fast path (`fastpath.FastBlock` -> `Intake.block`); a
block pyarrow cannot parse, and every record the fast path flags, goes through the per-record reader.
The blocks are the pieces of `--workers`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from exmed_bert.convert import records
from exmed_bert.convert.fastpath import fast_block, read_table
from exmed_bert.convert.formats.base import Source
from exmed_bert.convert.records import JsonlBlock, block_records, detect_format, iter_jsonl_blocks, iter_patients
from exmed_bert.convert.speed import prefetched


class JsonlSource(Source):
    # one process already parses the next block in a second thread: on 2 CPUs, 2 workers were 17% slower
    # (100,000 patients, 3.5 against 4.1 s)
    busy_cores = 2

    @staticmethod
    def claims(path: Path) -> bool:
        return path.is_file() and detect_format(path) == "jsonl"

    def size(self) -> int:
        return self.path.stat().st_size

    def pieces(self, workers: int) -> "Blocks":
        return Blocks(self.path, self.size())

    def feed(self, run, block: JsonlBlock) -> None:
        feed_block(run, self.path, block, table_of(block))

    def feed_all(self, run, bar) -> None:
        # the next block is parsed in a thread (pyarrow releases the GIL) while this one is converted
        for block, table in prefetched(iter_jsonl_blocks(self.path), table_of):
            before = run.n_records
            feed_block(run, self.path, block, table)
            bar.update(run.n_records - before)

    def records(self) -> Iterator[dict]:
        return iter_patients(self.path)

    def no_patients(self) -> str:
        return f"{self.path}: no patients in the file"


class Blocks:
    """The blocks of a JSONL file, cut as they are read; `len` is the count their size gives."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = path, size

    def __len__(self) -> int:
        return -(-self.size // records.BLOCK_BYTES)

    def __iter__(self) -> Iterator[JsonlBlock]:
        return iter_jsonl_blocks(self.path)


def table_of(block: JsonlBlock):
    """The block parsed by pyarrow, or None when it needs the per-record reader."""
    return read_table(block.data, block.line_count()) if block.simple_newlines() else None


def feed_block(run, path: Path, block: JsonlBlock, table) -> None:
    """One block of JSONL lines through `run`: by columns when pyarrow parsed it (`table`), else by record."""
    fb = fast_block(table, run.parser)
    if fb is None:
        for obj in block_records(path, block):
            run.record(obj)
        return
    lines: list = []
    loads = records._fast_loads()[0]

    def record_of(i: int):
        if not lines:
            lines.extend(block.data.split(b"\n"))
        return loads(lines[i])

    run.block(fb, record_of)
