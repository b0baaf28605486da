"""Parallel conversion (`--workers`): the shards of a MEDS dataset, or blocks of a JSONL file, are converted
in worker processes, and the main process merges their results in input order, so every output file is
byte-identical to a conversion in one process.

A worker runs the same pass as the main process (`Intake`, `Family`) on its piece with its own token
table, spills the piece's token arrays into the main process's temporary folder, and returns the names
of those files, the patient-level arrays per split, its tokens, counts and rejects (numbered within the
piece). A piece is whatever the input's format cuts it into: a MEDS shard, a row-group part of a large one,
or a JSONL block (`Source.pieces`: a format needs nothing more for workers). The main process maps the
worker's tokens into its own table, renumbers the rejects, and appends everything after the pieces before it (the token files are adopted as they are; the id map is applied
when a split is written). Two things only the whole input knows are settled there:
  - a patient id already taken by an earlier piece: that piece is converted again in the main process,
    by the reference rules (the later record is a duplicate; in MEDS, whose subjects may span shards, the
    later rows of a subject are counted as a split subject), rather than merged;
  - --on-error fail: the first bad record in input order stops the conversion, with its input-wide number.
Visit order depends only on the codes, not on which piece saw a code first (Family._token_tables), and
the vocabulary is sorted by token text, so neither depends on how the input was cut.

Workers start from a fork server on POSIX systems and with `spawn` on Windows (`processes.context`):
they import neither torch nor pandas, hold one piece at a time, keep freed memory for the next chunk
(`processes.tune_malloc`) and disable the cyclic GC like the main pass. An input of one piece (a JSON
document) is converted in the main process.
"""

from __future__ import annotations

import gc
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable

from exmed_bert.convert.formats.base import Source
from exmed_bert.convert.intake import Intake, Job, fail_message, reject_line
from exmed_bert.convert.processes import AUTO_MIN_BYTES, context, cpu_count, tune_malloc
from exmed_bert.convert.spill import Spill, discard_exported
from exmed_bert.errors import UserError


def plan_workers(source: Source, workers: int | None) -> tuple[int, Iterable | None]:
    """How many worker processes convert `source` (1 = none: the main process does it), and the pieces they
    take. `workers` None is the default: every CPU for inputs of at least AUTO_MIN_BYTES (starting workers,
    about 0.5 s, costs more than it saves below ~50,000 patients), else 1, and 1 where one process already
    keeps the CPUs busy (`Source.busy_cores`). Never more than pieces. Decided once, here."""
    size = source.size()
    if not size:
        return 1, None
    if workers is None:
        workers = 1 if size < AUTO_MIN_BYTES or cpu_count() <= source.busy_cores else cpu_count()
    if workers == 1:
        return 1, None
    pieces = source.pieces(workers)
    return max(1, min(workers, len(pieces))), pieces


# -- in a worker ---------------------------------------------------------------------------------
_JOB: Job | None = None
_N = 0   # pieces this worker converted (names its spill files)


def _start(job: Job) -> None:
    global _JOB
    _JOB = job
    tune_malloc()
    gc.disable()   # as speed.gc_paused: millions of acyclic containers, rescanned for nothing


def convert_piece(piece) -> dict:
    """A worker's whole pass over one piece; see the module docstring for what comes back."""
    global _N
    job = _JOB
    _N += 1
    spills = [Spill(job.spill_dir, f"w{os.getpid()}-{_N}-{tag}") if job.spill_dir else None for tag in ("pre", "task")]
    rejects: list = []
    run = job.start(spills, rejects, on_error="skip")
    try:
        job.source.feed(run, piece)
    except BaseException:
        for sp in spills:
            if sp is not None:
                sp.discard()
        raise
    parser, pre, task = run.parser, run.pre, run.task
    return {"n_records": run.n_records, "reasons": run.reasons, "rejects": rejects, "seen": run.seen,
            "empty": run.empty, "n_unlabelled": run.n_unlabelled, "n_unsplit": run.n_unsplit,
            "unsplit": run.unsplit, "split_subjects": run.split_subjects,
            "tokens": parser.tokens, "types": parser.token_types, "sort_keys": parser.sort_keys,
            "ignored": parser.ignored, "implausible_stays": parser.implausible_stays,
            "tally": job.source.tally(),
            "pre": pre.export() if pre is not None else None, "task": task.export() if task is not None else None}


# -- in the main process -------------------------------------------------------------------------
def merge(run: Intake, piece, r: dict, source: Source) -> None:
    """Append a worker's result for `piece` to the main pass `run`, as if `run` had read the piece."""
    again = not run.seen.isdisjoint(r["seen"]) or not run.seen.isdisjoint(r["empty"])
    if run.span_files:   # a subject an earlier piece rejected for no events is one begun there too
        again = again or not run.empty.isdisjoint(r["seen"]) or not run.empty.isdisjoint(r["empty"])
    if again:
        discard(r)
        source.feed(run, piece)   # a patient id of an earlier piece: the reference rules decide
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
    run.unsplit |= r["unsplit"]
    run.split_subjects |= r["split_subjects"]
    run.seen |= r["seen"]
    run.empty |= r["empty"]
    parser = run.parser
    lut = parser.adopt(r["tokens"], r["types"], r["sort_keys"])
    parser.ignored.update(r["ignored"])
    parser.implausible_stays += r["implausible_stays"]
    source.add_tally(r["tally"])
    for family, part in ((run.pre, r["pre"]), (run.task, r["task"])):
        if family is not None:
            family.merge(part, lut)


def discard(r: dict) -> None:
    """Delete the spill files of a worker's result that is not merged."""
    for part in (r["pre"], r["task"]):
        if part is not None and part["spilled"] is not None:
            discard_exported(part["spilled"])


def convert_in_workers(run: Intake, job: Job, work: Iterable, workers: int, bar) -> None:
    """Convert the pieces `work` in `workers` processes, merging results in order; at most 2 pieces per
    worker are in flight, so memory stays bounded on inputs of any length."""
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
            merge(run, piece, result, job.source)
            bar.update(run.n_records - before)
        done = True
    except BrokenProcessPool:
        raise UserError(f"{job.args.input}: a conversion worker stopped (out of memory, or a script calling the "
                        "conversion without an `if __name__ == \"__main__\":` guard); use fewer --workers, or "
                        "--workers 1 to convert in one process") from None
    finally:
        # after the last result the workers exit while this process writes (they have nothing left to do);
        # on an error, wait for them, so nothing of theirs outlives the error
        pool.shutdown(wait=not done, cancel_futures=True)
