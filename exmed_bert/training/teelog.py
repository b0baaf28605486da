"""`TeeLog`: copy everything the console shows (stdout, stderr, logging) into output/training.log.

The log is appended line by line so `tail -f output/training.log` works while training runs; it is the
one file we do not write atomically. Progress bars redraw with carriage returns; only the last state of
each bar line reaches the file, so the log stays readable.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import IO, TextIO

from exmed_bert.errors import UserError


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # cursor moves of nested progress bars


class _Tee:
    """A text stream that writes to the console stream and, line-buffered, to the log file."""

    def __init__(self, console: TextIO, log: IO[str]):
        self.console = console
        self.log = log
        self._line = ""

    def write(self, s: str) -> int:
        n = self.console.write(s)
        *lines, rest = s.split("\n")
        for piece in lines:
            # what a terminal would show: the text after the last carriage return of the line
            line = _ANSI.sub("", (self._line + piece).rstrip("\r").rsplit("\r", 1)[-1])
            self._line = ""
            if line.strip() or not piece:
                self.log.write(line + "\n")
        self._line += rest
        cut = self._line.rstrip("\r").rfind("\r")
        if cut >= 0:  # a redrawing progress bar: keep only its latest state
            self._line = self._line[cut + 1:]
        if lines:
            self.log.flush()
        return len(s) if n is None else n

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def close_line(self) -> None:
        """Write a pending partial line (a progress bar's final state) before closing."""
        tail = self._line.rstrip("\r").rsplit("\r", 1)[-1].strip()
        if tail:
            self.log.write(tail + "\n")
        self._line = ""

    def isatty(self) -> bool:
        return self.console.isatty()

    def fileno(self) -> int:
        return self.console.fileno()

    def __getattr__(self, name: str):
        return getattr(self.console, name)


class TeeLog:
    """Context manager: while active, stdout/stderr and logging handlers on them also go to `path`.

    `enabled=False` (non-zero ranks under torchrun) makes it a no-op, so only rank 0 writes the log.
    Logging handlers created before the tee keep a reference to the old stream; they are pointed at the
    tee while active and restored after, so nothing is logged twice.
    """

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._saved: list[tuple[logging.StreamHandler, TextIO]] = []

    def __enter__(self) -> "TeeLog":
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._stdout, self._stderr = sys.stdout, sys.stderr
        sys.stdout = _Tee(self._stdout, self._file)
        sys.stderr = _Tee(self._stderr, self._file)
        for handler in _stream_handlers():
            if handler.stream is self._stdout:
                self._saved.append((handler, handler.stream))
                handler.stream = sys.stdout
            elif handler.stream is self._stderr:
                self._saved.append((handler, handler.stream))
                handler.stream = sys.stderr
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.enabled or self._file is None:
            return
        for tee in (sys.stdout, sys.stderr):
            if isinstance(tee, _Tee):
                tee.close_line()
        # a run that stops (bad input refused, a crash) says why in its log too: the command line prints the
        # error after the tee has closed, which would leave the log without it (or empty)
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            why = "error" if issubclass(exc_type, UserError) else f"internal error: {exc_type.__name__}"
            self._file.write(f"{why}: {exc}\n")
        for handler, stream in self._saved:
            handler.stream = stream
        self._saved.clear()
        sys.stdout, sys.stderr = self._stdout, self._stderr
        self._file.close()
        self._file = None


def _stream_handlers() -> list[logging.StreamHandler]:
    """Stream handlers on the root logger and every named logger (transformers keeps its own)."""
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return [h for lg in loggers for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
