"""The worker processes' start method, and starting it before the conversion loads (`start_early`).

Light to import (multiprocessing only): the command line calls `start_early` on a first look at its flags
(`peek_flags`), before it imports even the argument parser's modules, so the fork server imports the
conversion modules (about 0.15 s) while this process imports its own, instead of after.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
from pathlib import Path

# what a worker runs, and the input formats it reads: imported once, by the fork server
WORKER_MODULES = ["exmed_bert.convert.workers", "exmed_bert.convert.formats"]
# With --workers left at its default, inputs smaller than this are converted in the main process
# (`workers.plan_workers`)
AUTO_MIN_BYTES = 16 << 20


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # Windows, macOS
        return os.cpu_count() or 1


def tune_malloc() -> None:
    """Have glibc's allocator keep freed memory for the next chunk instead of handing it back to the OS.

    A conversion encodes thousands of chunks, each allocating and freeing the same tens of MB of numpy
    temporaries. By default glibc returns that memory after each chunk (trimming the heap top, unmapping
    blocks over its adaptive threshold), and the next chunk page-faults it all back in: 500,000 faults
    and a quarter of the CPU time for 100,000 patients. A 64 MB top pad and a fixed 32 MB mmap threshold
    cut the faults about 6x for ~10 MB more peak memory. One arena for all threads: each thread that
    allocates (the dataset writers, the read-ahead, the input hashing) would otherwise get an arena of
    its own and keep its own padded top, ~30 MB more peak in one process for no speed. Only on glibc
    (Linux); a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-2, 64 << 20)   # M_TOP_PAD
    mallopt(-3, 32 << 20)   # M_MMAP_THRESHOLD
    mallopt(-8, 1)          # M_ARENA_MAX


def context():
    """forkserver where the OS has it (POSIX): one clean process imports the worker module once and forks
    each worker from it, so workers start in milliseconds and never inherit the main process's threads;
    spawn elsewhere (Windows), where each worker imports it again (about 0.4 s). Each worker still imports
    the main script (the '__main__' preload does not take effect on Python 3.11: the server is never given
    its path), which is why `exmed_bert.cli.convert` imports nothing heavy at module level."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", *WORKER_MODULES])   # used when the server starts (once per process)
        return ctx
    return multiprocessing.get_context("spawn")


def start_early(input, workers: int | None) -> bool:
    """Start the fork server now if a conversion of `input` with `workers` may use worker processes
    (MEDS Parquet or a JSONL file, of at least AUTO_MIN_BYTES unless `workers` is set); True if started.
    Calling it again does nothing more. This is a guess from the flags and file sizes, not the decision
    (`workers.plan_workers`): a wrong one (one shard too small to cut into parts, JSONL on 2 CPUs) costs
    one idle process, stopped at exit."""
    if input is None or workers == 1 or "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    try:
        path = Path(input)
        jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
        if path.is_dir():
            data = path / "data" if (path / "data").is_dir() else path
            size = sum(f.stat().st_size for f in data.rglob("*.parquet"))
        elif jsonl or path.suffix.lower() == ".parquet":
            size = path.stat().st_size
        else:
            return False
    except OSError:
        return False   # the conversion reports it
    if not size or (workers is None and size < AUTO_MIN_BYTES):
        return False
    from multiprocessing import forkserver

    context()
    forkserver.ensure_running()
    return True


def peek_flags(argv: list[str]) -> tuple[str | None, int | None]:
    """(--input, --workers) as given on the command line, read before the argument parser and the config
    modules are imported, so the fork server can start first (`start_early`); (None, None) when a --config
    file may set them, for --help, or when they are not there. Never an error: the parser reports those."""
    if any(a in ("-h", "--help") or a == "--config" or a.startswith("--config=") for a in argv):
        return None, None
    found: dict[str, str] = {}
    for i, a in enumerate(argv):
        for flag in ("--input", "--workers"):
            if a == flag and i + 1 < len(argv):
                found[flag] = argv[i + 1]
            elif a.startswith(flag + "="):
                found[flag] = a.split("=", 1)[1]
    try:
        workers = int(found["--workers"]) if "--workers" in found else None
    except ValueError:
        workers = 1   # not a number: the parser will say so; start nothing
    return found.get("--input"), workers
