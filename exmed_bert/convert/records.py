"""Streaming readers for patient records: `{"patients": [...]}` JSON, a bare JSON array, or JSONL.

Each reader yields one patient dict at a time, never the whole file, so a 2 GB extract converts in
bounded memory. Malformed JSON and non-UTF-8 bytes become a UserError naming the line and column.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Iterator

from exmed_bert.errors import UserError

try:  # optional: about 2x faster per JSONL line than json.loads
    import orjson
except ImportError:
    orjson = None

_CHUNK = 1 << 20              # characters read per refill
_MAX_RECORD = 256 << 20       # a single value larger than this is treated as malformed, not incomplete
_WS = " \t\r\n"
BLOCK_BYTES = 8 << 20        # bytes of JSONL lines per block (a piece of --workers)


def open_text(path: Path):
    """UTF-8 text (a BOM from Windows tools is dropped)."""
    return open(path, "r", encoding="utf-8-sig", newline="")


def _utf8_error(path: Path, e: UnicodeDecodeError) -> UserError:
    return UserError(f"{path}: not UTF-8 text (bad byte at offset {e.start} of a read block); "
                     "re-save the file as UTF-8")


def detect_format(path: Path) -> str:
    """'jsonl' or 'json' from the extension, else from the first key of the first object."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with open_text(path) as f:
        try:
            head = f.read(4096)
        except UnicodeDecodeError as e:
            raise _utf8_error(path, e) from None
    s = head.lstrip(_WS)
    if not s:
        raise UserError(f"{path}: the file is empty; expected patients as JSON or JSONL")
    if s[0] == "[":
        return "json"
    if s[0] != "{":
        raise UserError(f"{path}: line 1: not JSON (expected '{{' or '['; got {s[0]!r})")
    rest = s[1:].lstrip(_WS)
    if rest.startswith("}") or rest.startswith('"patients"') or rest.startswith('"metadata"'):
        return "json"
    return "jsonl"


def iter_patients(path: str | os.PathLike) -> Iterator[dict]:
    """Patient objects from a JSON or JSONL file, one at a time. Non-objects are yielded as they are
    (the validator rejects them with a reason)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: input file not found")
    fmt = detect_format(path)
    yield from (_iter_jsonl(path) if fmt == "jsonl" else _iter_json(path))


def _fast_loads():
    """orjson.loads when installed (about 2x faster per line; optional), else json.loads."""
    if orjson is not None:
        return orjson.loads, (json.JSONDecodeError, orjson.JSONDecodeError)
    return json.loads, (json.JSONDecodeError,)


def _iter_jsonl(path: Path) -> Iterator[dict]:
    n = 0
    for block in iter_jsonl_blocks(path):
        for obj in block_records(path, block):
            n += 1
            yield obj
    if n == 0:
        raise UserError(f"{path}: no patients in the file")


class JsonlBlock:
    """Whole lines of a JSONL file as bytes (ending in a newline) and the number of the first line."""

    def __init__(self, data: bytes, first_line: int):
        self.data, self.first_line = data, first_line

        self._lines: int | None = None

    def simple_newlines(self) -> bool:
        """True when every line break is '\n' or '\r\n' (Python's text mode also splits on a lone '\r')."""
        return b"\r" not in self.data or self.data.count(b"\r") == self.data.count(b"\r\n")

    def line_count(self) -> int:
        if self._lines is None:
            self._lines = (self.data.count(b"\n") if self.simple_newlines() else
                           sum(1 for _ in io.StringIO(self.data.decode("utf-8", "replace"), newline="")))
        return self._lines


def iter_jsonl_blocks(path: Path, size: int | None = None) -> Iterator[JsonlBlock]:
    """Blocks of about `size` bytes of whole lines (a UTF-8 BOM at the start is dropped)."""
    size, line = size or BLOCK_BYTES, 1
    with open(path, "rb") as f:
        rest = f.read(size)
        if rest.startswith(b"\xef\xbb\xbf"):
            rest = rest[3:]
        while rest:
            more = f.read(size)
            cut = rest.rfind(b"\n") + 1
            if more and cut == 0:            # a line longer than the block: keep reading
                rest += more
                continue
            if not more:
                data, rest = (rest if rest.endswith(b"\n") else rest + b"\n"), b""
            else:
                data, rest = rest[:cut], rest[cut:] + more
            block = JsonlBlock(data, line)
            yield block
            line += block.line_count()


def block_records(path: Path, block: JsonlBlock) -> Iterator[dict]:
    """The objects of a block, one per non-blank line; bad JSON or bytes name the line (and column)."""
    loads, errors = _fast_loads()
    try:
        text = block.data.decode("utf-8")
    except UnicodeDecodeError as e:
        near = block.first_line + block.data[:e.start].count(b"\n")
        raise UserError(f"{path}: not UTF-8 text (near line {near}); re-save the file as UTF-8") from None
    for lineno, line in enumerate(io.StringIO(text, newline=""), block.first_line):
        if line.isspace() or not line:
            continue
        try:
            obj = loads(line)
        except errors:
            try:  # stdlib json for the message: orjson's columns count bytes
                json.loads(line)
                raise UserError(f"{path}: line {lineno}: not valid JSON")
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
        yield obj


class _Stream:
    """A growing text buffer over a file, with absolute line/column bookkeeping for messages."""

    def __init__(self, path: Path, f):
        self.path, self.f = path, f
        self.buf, self.pos, self.eof = "", 0, False
        self.line_base, self.col_base = 1, 1   # line/column of buf[0]

    def fill(self, need_more: bool = False) -> bool:
        """Drop consumed text and read another block. False at end of file."""
        if self.eof:
            return False
        consumed = self.buf[:self.pos]
        nl = consumed.count("\n")
        if nl:
            self.line_base += nl
            self.col_base = len(consumed) - consumed.rfind("\n")
        else:
            self.col_base += len(consumed)
        size = max(_CHUNK, len(self.buf) - self.pos) if need_more else _CHUNK
        try:
            block = self.f.read(size)
        except UnicodeDecodeError:
            raise UserError(f"{self.path}: not UTF-8 text (near line {self.line_base}); "
                            "re-save the file as UTF-8") from None
        self.buf, self.pos = self.buf[self.pos:] + block, 0
        self.eof = not block
        return bool(block)

    def where(self, pos: int) -> str:
        before = self.buf[:pos]
        nl = before.count("\n")
        line = self.line_base + nl
        col = pos - before.rfind("\n") if nl else self.col_base + pos
        return f"line {line}, column {col}"

    def error(self, pos: int, what: str) -> UserError:
        return UserError(f"{self.path}: {self.where(pos)}: not valid JSON ({what})")

    def skip_ws(self) -> str:
        """Next non-space character ('' at end of file), without consuming it."""
        while True:
            buf, n = self.buf, len(self.buf)
            p = self.pos
            while p < n and buf[p] in _WS:
                p += 1
            self.pos = p
            if p < n:
                return buf[p]
            if not self.fill():
                return ""

    def expect(self, chars: str) -> str:
        c = self.skip_ws()
        if c == "" or c not in chars:
            got = "end of file" if c == "" else repr(c)
            raise self.error(self.pos, f"expected {' or '.join(repr(x) for x in chars)}, got {got}")
        self.pos += 1
        return c

    def value(self, decoder: json.JSONDecoder):
        """Decode one JSON value at the cursor, reading more of the file while it is incomplete."""
        self.skip_ws()
        while True:
            try:
                obj, end = decoder.raw_decode(self.buf, self.pos)
                # a number at the very end of the buffer may continue in the next block
                if end < len(self.buf) or self.eof or not isinstance(obj, (int, float)):
                    self.pos = end
                    return obj
            except json.JSONDecodeError as e:
                if self.eof or len(self.buf) - self.pos > _MAX_RECORD:
                    raise self.error(e.pos, e.msg) from None
            self.fill(need_more=True)


def _iter_json(path: Path) -> Iterator[dict]:
    decoder = json.JSONDecoder()
    with open_text(path) as f:
        s = _Stream(path, f)
        s.fill()
        first = s.expect("{[")
        if first == "[":
            yield from _iter_array(s, decoder, path)
            return
        found = False
        if s.skip_ws() == "}":
            s.pos += 1
        else:
            while True:
                key = s.value(decoder)
                if not isinstance(key, str):
                    raise s.error(s.pos, "expected a key string")
                s.expect(":")
                if key == "patients":
                    s.expect("[")
                    found = True
                    yield from _iter_array(s, decoder, path)
                else:
                    s.value(decoder)  # metadata and other top-level values are small; skip them
                if s.expect(",}") == "}":
                    break
        if s.skip_ws() != "":
            raise s.error(s.pos, "extra data after the top-level object")
        if not found:
            raise UserError(f"{path}: no \"patients\" list in the file; expected {{\"patients\": [...]}} or JSONL")


def _iter_array(s: _Stream, decoder: json.JSONDecoder, path: Path) -> Iterator[dict]:
    if s.skip_ws() == "]":
        s.pos += 1
        raise UserError(f"{path}: the patient list is empty")
    while True:
        yield s.value(decoder)
        if s.expect(",]") == "]":
            return
