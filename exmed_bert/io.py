"""Atomic file writes and the run-info record written next to every run's outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from exmed_bert.errors import UserError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


REPLACE_TRIES = 5   # os.replace attempts while the target is held (Windows), 0.1 s to 1.6 s apart


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """`os.replace`, for a target that Windows may hold: there a file cannot be replaced while it is open or
    memory-mapped (a dataset this process loaded with mmap=True and dropped, whose mapping goes at the next
    garbage collection; or a file open in another program). Collect and retry a few times, then say which
    file is held, as one line. POSIX replaces open and mapped files at once, so the first try succeeds."""
    for attempt in range(REPLACE_TRIES):
        try:
            os.replace(src, dst)
            return
        except PermissionError as e:
            if attempt == REPLACE_TRIES - 1:
                raise UserError(f"{dst}: cannot replace the file ({e.strerror}); another program, or an open "
                                "dataset, holds it: close it and run again") from None
            gc.collect()
            time.sleep(0.1 * 2 ** attempt)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    A crash at any point leaves either no file or the complete previous one, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding,
                       newline=None if "b" in mode else "") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def start_writeback(f: BinaryIO, start: int, end: int) -> int:
    """Ask the kernel to start writing bytes [start, end) of the open file `f` to disk now, without waiting
    (Linux: posix_fadvise DONTNEED starts writeback of dirty pages and keeps them cached), so the fsync of
    an atomic write finds them written. Elsewhere (or on a file without a descriptor) it does nothing.
    Returns `end`."""
    if hasattr(os, "posix_fadvise") and end > start:
        try:
            f.flush()
            os.posix_fadvise(f.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
        except (OSError, AttributeError, io.UnsupportedOperation):
            pass
    return end


@contextlib.contextmanager
def output_set() -> Iterator[Callable[[str | os.PathLike], Path]]:
    """Commit several outputs together: `stage(path)` names a hidden file to write `path` to (with the
    usual atomic writes); only when the block finishes are all of them renamed into place, back to back.
    An interrupted run leaves the previous complete set, not a mix of new and old files."""
    staged: list[tuple[Path, Path]] = []

    def stage(path: str | os.PathLike) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.staged.tmp")
        staged.append((tmp, path))
        return tmp

    try:
        yield stage
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for tmp, final in staged:
        replace(tmp, final)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    # torch (2 s to import, python -X importtime) loads with the first tensor file written: io is also
    # imported by the light settings modules that read config.yaml
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def write_parquet(path: str | os.PathLike, table: Any) -> None:
    """Write a pyarrow Table as Parquet, atomically."""
    import pyarrow.parquet as pq

    with atomic_write(path, "wb") as f:
        pq.write_table(table, f)


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_fingerprint(path: str | os.PathLike, chunk: int = 1 << 20,
                     stop: threading.Event | None = None) -> str | None:
    """sha256 of a file (or of every file below a folder, in sorted order); None if `stop` is set first."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as f:
            while block := f.read(chunk):
                if stop is not None and stop.is_set():
                    return None
                h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def fingerprint_meanwhile(path: str | os.PathLike) -> Iterator[Callable[[], str]]:
    """`file_fingerprint(path)` computed in a thread while the block runs (sha256 and reads release the
    GIL, so it costs the block no time where a core is free); yields a function that waits for it and
    returns it (or raises what hashing raised). Leaving the block stops the hashing."""
    stop, box = threading.Event(), {}

    def work() -> None:
        try:
            box["value"] = file_fingerprint(path, stop=stop)
        except BaseException as e:  # re-raised by result(), in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=work, name="fingerprint", daemon=True)
    thread.start()

    def result() -> str:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    try:
        yield result
    finally:
        stop.set()
        thread.join()


def package_versions() -> dict[str, str]:
    from importlib import metadata   # 6 ms to import; every process that writes a file imports this module

    out = {"python": platform.python_version()}
    for name in ("exmed-bert", "torch", "transformers", "numpy", "pandas", "scikit-learn", "xgboost"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_run_info(output_dir: str | os.PathLike, args: Any, extra: dict | None = None,
                   name: str = "run_config.json") -> Path:
    """Record what produced this output: resolved args, seed, versions, git commit, host, time."""
    args_dict = dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args)
    info = {
        "args": args_dict,
        "seed": args_dict.get("seed"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "platform": platform.platform(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    path = Path(output_dir) / name
    write_json(path, info)
    return path
