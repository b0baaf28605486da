"""Parallel conversion (`--workers`): the shards of a MEDS dataset, or blocks of a JSONL file, are converted
in worker processes, and the main process merges their results in input order, so every output file is
byte-identical to a conversion in one process.

A worker runs the same pass as the main process (`Intake`, `Family`) on its piece with its own token
table, spills the piece's token arrays into the main process's temporary folder, and returns the names
of those files, the patient-level arrays per split, its tokens, counts and rejects (numbered within the
piece). A piece is a MEDS shard, a row-group part of a large one (`meds_pieces`, `shard_parts`), or
a JSONL block. The main process maps the worker's tokens into its own table, renumbers the rejects, and appends
everything after the pieces before it (the token files are adopted as they are; the id map is applied
when a split is written). Two things only the whole input knows are settled there:
  - a patient id already taken by an earlier piece: that piece is converted again in the main process,
    by the reference rules (the later record is a duplicate), rather than merged;
  - --on-error fail: the first bad record in input order stops the conversion, with its input-wide number.
Visit order depends only on the codes, not on which piece saw a code first (Family._token_tables), and
the vocabulary is sorted by token text, so neither depends on how the input was cut.

Workers start from a fork server on POSIX systems and with `spawn` on Windows (`processes.context`):
they import neither torch nor pandas, hold one piece at a time, keep freed memory for the next chunk
(`processes.tune_malloc`) and disable the cyclic GC like the main pass. A JSON document (not JSONL) is
one piece: it is converted in the main process.
"""

from __future__ import annotations

import gc
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from exmed_bert.convert.family import Family
from exmed_bert.convert.fastpath import read_table
from exmed_bert.convert.feed import feed_jsonl_block, feed_meds_file, meds_split_of
from exmed_bert.convert.intake import Intake, fail_message, reject_line
from exmed_bert.convert.meds import MedsReader
from exmed_bert.convert.shard_parts import ShardPart, shard_parts
from exmed_bert.convert.processes import context, default_workers, tune_malloc
from exmed_bert.convert.records import JsonlBlock, _BLOCK, iter_jsonl_blocks
from exmed_bert.convert.spill import Spill, discard_exported
from exmed_bert.convert.validate import RecordParser
from exmed_bert.errors import UserError

def plan_workers(workers: int | None, input, reader: MedsReader | None, jsonl: bool) -> int:
    """How many worker processes convert `input` (1 = none, the main process does it). `workers` None is
    the default (`processes.default_workers`): every CPU for inputs of at least AUTO_MIN_BYTES, else 1,
    and 1 for JSONL on 2 CPUs or fewer. Never more than pieces (MEDS shards, cut into row-group parts when
    there are fewer shards than twice the workers)."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if reader is not None:
        size = sum(f.stat().st_size for f in reader.files)
    elif jsonl:
        size = Path(input).stat().st_size
    else:
        return 1
    if workers is None:
        workers = default_workers(size, jsonl)
    if workers == 1:
        return 1
    n = len(meds_pieces(reader, workers)) if reader is not None else -(-size // _BLOCK)
    return max(1, min(workers, n))


@dataclass
class Job:
    """What every worker needs, sent once when it starts."""
    input: str
    other_codes: str
    max_length: int
    seed: int
    train_ratio: float
    pretraining: bool
    labels: dict | None          # {patient_id: [(label, prediction day or None, prediction time or None), ...]}
    splits: dict | None          # MEDS subject splits {str(subject_id): split name}, or None (hash)
    value_edges: dict            # --value-bins edges {code: edges}
    batch_rows: int              # MedsReader.batch_rows
    spill_dir: str | None = None # the main process's spill folder: workers spill token arrays there
    event_times: bool = False    # labels with prediction times: events carry their times (MedsReader.event_times)
    label_times: bool = False    # ... and task rows record them (Family.label_times)


@dataclass
class Piece:
    """One unit of work: a MEDS shard (`file`), or a part of one (`part`), or a block of JSONL lines
    (`data`, from `first_line`)."""
    file: str | None = None
    data: bytes | None = None
    first_line: int = 1
    part: ShardPart | None = None


# a shard is cut into parts of at least this many rows (a part may read one extra row group at its start)
MIN_PART_ROWS = 500_000


def meds_pieces(reader: MedsReader, workers: int) -> list[Piece]:
    """The shards in order; when there are fewer than two per worker, shards are cut into row-group parts
    (`shard_parts`) of about rows / (2 x workers) rows, so every worker has work."""
    if len(reader.files) >= 2 * workers:
        return [Piece(file=str(f)) for f in reader.files]
    rows = {f: _rows(f) for f in reader.files}
    per = max(MIN_PART_ROWS, sum(rows.values()) // (2 * workers))
    out = []
    for f in reader.files:
        parts = shard_parts(f, per) if rows[f] >= 2 * per else None
        out += [Piece(file=str(f), part=p) for p in parts] if parts else [Piece(file=str(f))]
    return out


def _rows(path) -> int:
    """Rows of a Parquet file from its footer; 0 if unreadable (its piece then reports why, in order)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError):
        return 0


def pieces(input, reader: MedsReader | None, workers: int = 1) -> Iterator[Piece]:
    if reader is not None:
        return iter(meds_pieces(reader, workers))
    return (Piece(data=b.data, first_line=b.first_line) for b in iter_jsonl_blocks(Path(input)))


# -- in a worker ---------------------------------------------------------------------------------
_JOB: Job | None = None
_READER: MedsReader | None = None
_N = 0   # pieces this worker converted (names its spill files)


def _start(job: Job) -> None:
    global _JOB
    _JOB = job
    tune_malloc()
    gc.disable()   # as conversion._gc_paused: millions of acyclic containers, rescanned for nothing


def feed(run: Intake, piece: Piece, input, reader: MedsReader | None) -> None:
    """One piece through a pass `run` (a worker's, or the main process's for a piece it converts again)."""
    if piece.file is not None:
        feed_meds_file(run, reader, Path(piece.file), part=piece.part)
    else:
        block = JsonlBlock(piece.data, piece.first_line)
        table = read_table(block.data, block.line_count()) if block.simple_newlines() else None
        feed_jsonl_block(run, Path(input), block, table)


def convert_piece(piece: Piece) -> dict:
    """A worker's whole pass over one piece; see the module docstring for what comes back."""
    global _READER, _N
    job = _JOB
    _N += 1
    parser = RecordParser(other_codes=job.other_codes)
    parser.read_times = job.event_times
    spills = [Spill(job.spill_dir, f"w{os.getpid()}-{_N}-{tag}") if job.spill_dir else None for tag in ("pre", "task")]
    pre = Family(parser, job.max_length, task=False, spill=spills[0]) if job.pretraining else None
    task = Family(parser, job.max_length, task=True, spill=spills[1], label_times=job.label_times,
                  cut_at_time=job.event_times) if job.labels is not None else None
    rejects: list = []
    run = Intake(parser, pre, task, job.labels, seed=job.seed, train_ratio=job.train_ratio, on_error="skip",
                 input=job.input, rejects=rejects,
                 split_of=meds_split_of(job.splits) if job.splits is not None else None)
    reader = None
    if piece.file is not None:
        if _READER is None:
            _READER = MedsReader(job.input, other_codes=job.other_codes)
            _READER.value_edges, _READER.batch_rows = job.value_edges, job.batch_rows
            _READER.event_times = job.event_times
        reader = _READER
        reader.ignored.clear()
        reader.kept.clear()
    try:
        feed(run, piece, job.input, reader)
    except BaseException:
        for sp in spills:
            if sp is not None:
                sp.discard()
        raise
    return {"n_records": run.n_records, "reasons": run.reasons, "rejects": rejects, "seen": run.seen,
            "empty": run.empty, "n_unlabelled": run.n_unlabelled, "n_unsplit": run.n_unsplit,
            "tokens": parser.tokens, "types": parser.token_types, "sort_keys": parser.sort_keys,
            "ignored": parser.ignored, "implausible_stays": parser.implausible_stays,
            "meds_ignored": reader.ignored if reader is not None else None,
            "meds_kept": reader.kept if reader is not None else None,
            "pre": pre.export() if pre is not None else None, "task": task.export() if task is not None else None}


# -- in the main process -------------------------------------------------------------------------
def merge(run: Intake, piece: Piece, r: dict, reader: MedsReader | None) -> None:
    """Append a worker's result for `piece` to the main pass `run`, as if `run` had read the piece."""
    if not run.seen.isdisjoint(r["seen"]) or not run.seen.isdisjoint(r["empty"]):
        discard(r)
        feed(run, piece, run.input, reader)   # a patient id of an earlier piece: the reference rules decide
        return
    if run.on_error == "fail" and r["rejects"]:
        n, pid, reason = r["rejects"][0]
        discard(r)
        raise UserError(fail_message(run.input, run.n_records + n, pid, reason))
    base = run.n_records
    for n, pid, reason in r["rejects"]:
        run.rej.write(reject_line(base + n, pid, reason))
    run.n_records += r["n_records"]
    run.reasons.update(r["reasons"])
    run.n_unlabelled += r["n_unlabelled"]
    run.n_unsplit += r["n_unsplit"]
    run.seen |= r["seen"]
    parser = run.parser
    lut = parser.adopt(r["tokens"], r["types"], r["sort_keys"])
    parser.ignored.update(r["ignored"])
    parser.implausible_stays += r["implausible_stays"]
    if reader is not None:
        reader.ignored.update(r["meds_ignored"])
        reader.kept.update(r["meds_kept"])
    for family, part in ((run.pre, r["pre"]), (run.task, r["task"])):
        if family is not None:
            family.merge(part, lut)


def discard(r: dict) -> None:
    """Delete the spill files of a worker's result that is not merged."""
    for part in (r["pre"], r["task"]):
        if part is not None and part["spilled"] is not None:
            discard_exported(part["spilled"])


def convert_in_workers(run: Intake, job: Job, work: Iterable[Piece], workers: int, reader: MedsReader | None,
                       bar) -> None:
    """Convert `work` in `workers` processes, merging results in order; at most 2 pieces per worker are
    in flight, so memory stays bounded on inputs of any length."""
    pool = ProcessPoolExecutor(workers, mp_context=context(), initializer=_start, initargs=(job,))
    done = False
    try:
        todo = iter(work)
        flight: deque = deque()

        def submit() -> None:
            piece = next(todo, None)
            if piece is not None:
                flight.append((piece, pool.submit(convert_piece, piece)))

        for _ in range(2 * workers):
            submit()
        while flight:
            piece, future = flight.popleft()
            result = future.result()
            submit()
            before = run.n_records
            merge(run, piece, result, reader)
            bar.update(run.n_records - before)
        done = True
    except BrokenProcessPool:
        raise UserError(f"{job.input}: a conversion worker stopped (out of memory, or a script calling the "
                        "conversion without an `if __name__ == \"__main__\":` guard); use fewer --workers, or "
                        "--workers 1 to convert in one process") from None
    finally:
        # after the last result the workers exit while this process writes (they have nothing left to do);
        # on an error, wait for them, so nothing of theirs outlives the error
        pool.shutdown(wait=not done, cancel_futures=True)
