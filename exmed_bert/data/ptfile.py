"""`.pt` files written without torch: a dict of arrays in torch.save's zip format, streamed by chunks.

Datasets are read with `torch.load(weights_only=True, mmap=True)`. Writing them with `torch.save` needs
torch in the writing process (about 200 MB and 1.2 s to import) and every array in memory at once. This
module writes the same container from numpy arrays, or from chunk iterators (`Chunks`), so the
conversion's writer holds one chunk at a time and never imports torch:

    archive/data.pkl                 pickle protocol 2; each tensor is torch._utils._rebuild_tensor_v2 of a
                                     persistent ('storage', torch.<Type>Storage, key, 'cpu', numel)
    archive/.format_version          b"1"
    archive/.storage_alignment       b"64"
    archive/byteorder                b"little" / b"big"
    archive/data/<key>               the raw bytes of storage <key>, stored (not compressed), 64-byte aligned
    archive/version                  b"3\\n"
    archive/.data/serialization_id   40 digits derived from the record names and CRCs

This is the layout torch.save writes (torch 2.x; the zip format is torch's since 1.6), and
`tests/test_ptfile.py` reads every supported value back with `torch.load`. Values may be None,
bools, ints, floats, strings, lists, tuples and dicts of them, and numeric arrays (numpy, `Chunks`, or
anything with `.numpy()`, such as a CPU tensor). Output is deterministic: the same dict gives the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import struct
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np

from exmed_bert.io import atomic_write, start_writeback

ALIGNMENT = 64
_STORAGES = {np.dtype(np.bool_): "BoolStorage", np.dtype(np.uint8): "ByteStorage", np.dtype(np.int8): "CharStorage",
             np.dtype(np.int16): "ShortStorage", np.dtype(np.int32): "IntStorage", np.dtype(np.int64): "LongStorage",
             np.dtype(np.float16): "HalfStorage", np.dtype(np.float32): "FloatStorage",
             np.dtype(np.float64): "DoubleStorage"}
_STEP = 1 << 20   # elements per write when an in-memory array is written
_WRITEBACK = 32 << 20   # bytes written between requests to start writing them to disk


@dataclass
class Chunks:
    """A 1-D array of `length` elements of `dtype`, produced by `chunks()` one piece at a time (each piece is
    cast to `dtype`). Writing checks that the pieces add up to `length`."""
    dtype: Any
    length: int
    chunks: Callable[[], Iterable[np.ndarray]]

    def __post_init__(self):
        self.dtype = np.dtype(self.dtype)


def _as_source(v) -> np.ndarray | Chunks | None:
    if isinstance(v, Chunks):
        return v
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "numpy") and hasattr(v, "dtype") and not isinstance(v, (str, bytes)):
        return v.detach().cpu().numpy() if hasattr(v, "detach") else v.numpy()
    return None


class _Pickler:
    """Pickle protocol 2 opcodes for the supported values; tensors become persistent storage references."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.storages: list[np.ndarray | Chunks] = []

    def dump(self, obj) -> bytes:
        self.value(obj)
        self.out += b"."
        return bytes(self.out)

    def value(self, v) -> None:
        out = self.out
        if v is None:
            out += b"N"
        elif v is True or v is False:
            out += b"\x88" if v else b"\x89"
        elif isinstance(v, (int, np.integer)):
            self.int(int(v))
        elif isinstance(v, (float, np.floating)):
            out += b"G" + struct.pack(">d", float(v))
        elif isinstance(v, str):
            b = v.encode("utf-8", "surrogatepass")
            out += b"X" + struct.pack("<I", len(b)) + b
        elif isinstance(v, list) and all(type(x) is str for x in v):   # patient ids: the C pickler, no memo
            buf = io.BytesIO()
            p = pickle.Pickler(buf, protocol=2)
            p.fast = True
            p.dump(v)
            out += buf.getbuffer()[2:-1]       # without its PROTO header and STOP
        elif isinstance(v, list):
            out += b"]"
            for i in range(0, len(v), 1000):   # as pickle batches APPENDS
                out += b"("
                for x in v[i:i + 1000]:
                    self.value(x)
                out += b"e"
        elif isinstance(v, tuple):
            self.tuple(v)
        elif isinstance(v, dict):
            out += b"}"
            items = list(v.items())
            for i in range(0, len(items), 1000):
                out += b"("
                for k, x in items[i:i + 1000]:
                    self.value(k)
                    self.value(x)
                out += b"u"
        else:
            src = _as_source(v)
            if src is None:
                raise TypeError(f"cannot write a {type(v).__name__} to a .pt file")
            self.tensor(src)

    def int(self, n: int) -> None:
        if 0 <= n < 256:
            self.out += b"K" + bytes([n])
        elif 0 <= n < 65536:
            self.out += b"M" + struct.pack("<H", n)
        elif -2 ** 31 <= n < 2 ** 31:
            self.out += b"J" + struct.pack("<i", n)
        else:
            b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(b)]) + b

    def tuple(self, t: tuple) -> None:
        if not t:
            self.out += b")"
            return
        if len(t) > 3:
            self.out += b"("
        for x in t:
            self.value(x)
        self.out += (b"\x85", b"\x86", b"\x87")[len(t) - 1] if len(t) <= 3 else b"t"

    def tensor(self, src: np.ndarray | Chunks) -> None:
        if isinstance(src, Chunks):
            dtype, shape = src.dtype, (src.length,)
        else:
            if not src.flags.c_contiguous:
                src = np.ascontiguousarray(src)
            dtype, shape = src.dtype, src.shape
        if dtype not in _STORAGES:
            raise TypeError(f"cannot write an array of {dtype} to a .pt file")
        key = str(len(self.storages))
        self.storages.append(src)
        numel = int(np.prod(shape, dtype=np.int64))
        strides, step = [], 1
        for n in reversed(shape):
            strides.append(step)
            step *= max(int(n), 1)
        out = self.out
        out += b"ctorch._utils\n_rebuild_tensor_v2\n("
        out += b"("
        self.value("storage")
        out += b"ctorch\n" + _STORAGES[dtype].encode() + b"\n"
        self.value(key)
        self.value("cpu")
        self.int(numel)
        out += b"tQ"
        self.int(0)                                         # storage offset
        self.tuple(tuple(int(n) for n in shape))
        self.tuple(tuple(reversed(strides)))
        out += b"\x89"                                      # requires_grad False
        out += b"ccollections\nOrderedDict\n)R"             # no backward hooks
        out += b"tR"


def _ahead(it: Iterable) -> Iterator:
    """`it`'s items, each produced in a thread while the caller writes the one before (reading and id
    lookups overlap with CRCs and writes; all of them free the GIL)."""
    with ThreadPoolExecutor(1) as pool:
        it = iter(it)
        nxt = pool.submit(next, it, None)
        while (item := nxt.result()) is not None:
            nxt = pool.submit(next, it, None)
            yield item


def _pieces(src: np.ndarray | Chunks) -> Iterable[np.ndarray]:
    if isinstance(src, Chunks):
        n = 0
        for c in src.chunks():
            c = np.ascontiguousarray(c, dtype=src.dtype).ravel()
            n += len(c)
            if n > src.length:
                break
            yield c
        if n != src.length:
            raise ValueError(f"a streamed array gave {n} elements where {src.length} were declared")
        return
    flat = src.reshape(-1)
    for i in range(0, len(flat), _STEP):
        yield flat[i:i + _STEP]


def _stream(sources: list) -> Iterator[tuple[int, np.ndarray | None]]:
    """(record index, piece) for every piece of every source in order, then (index, None) at each record's
    end; produced one item ahead in a thread, across records, so a record's first read overlaps with the
    last write of the one before."""
    def items():
        for i, src in enumerate(sources):
            for piece in _pieces(src):
                yield i, piece
            yield i, None
    return _ahead(items())


def _nbytes(src: np.ndarray | Chunks) -> int:
    return src.length * src.dtype.itemsize if isinstance(src, Chunks) else src.nbytes


def write_pt(path, obj: Any) -> None:
    """`save_pt` to `path`, atomically (exmed_bert.io.atomic_write)."""
    with atomic_write(path, "wb") as f:
        save_pt(obj, f)


def save_pt(obj: Any, f: BinaryIO) -> None:
    """Write `obj` (see the module docstring for what it may hold) to the seekable binary file `f`."""
    pickler = _Pickler()
    records: list[tuple[str, Any]] = [("data.pkl", pickler.dump(obj)), (".format_version", b"1"),
                                      (".storage_alignment", str(ALIGNMENT).encode()),
                                      ("byteorder", sys.byteorder.encode())]
    records += [(f"data/{i}", src) for i, src in enumerate(pickler.storages)]
    records.append(("version", b"3\n"))
    records = [(name, np.frombuffer(src, dtype=np.uint8) if isinstance(src, bytes) else src) for name, src in records]
    names, crcs = [], []
    stream = _stream([src for _, src in records])
    with contextlib.closing(stream), zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for i, (name, src) in enumerate(records):
            info = _record(z, f"archive/{name}", _nbytes(src), _until_end(stream, i))
            names.append(info.filename)
            crcs.append(info.CRC)
        digest = hashlib.blake2b("\n".join(names).encode(), digest_size=8).digest()
        combined = 0
        for crc in crcs:   # boost-style hash_combine on 64 bits, as torch combines record CRCs
            combined ^= (crc + 0x9E3779B9 + (combined << 6) + (combined >> 2)) & 0xFFFFFFFFFFFFFFFF
        serial = f"{int.from_bytes(digest, 'little'):020d}{combined:020d}".encode()
        _record(z, "archive/.data/serialization_id", len(serial), [np.frombuffer(serial, dtype=np.uint8)])


def _until_end(stream: Iterator[tuple[int, np.ndarray | None]], index: int) -> Iterator[np.ndarray]:
    for i, piece in stream:
        if i != index:
            raise RuntimeError(f"record {index}: got a piece of record {i} (a writer bug)")
        if piece is None:
            return
        yield piece


def _record(z: zipfile.ZipFile, name: str, size: int, pieces: Iterable[np.ndarray]) -> zipfile.ZipInfo:
    """One stored record of `size` bytes whose data starts at a multiple of ALIGNMENT (padding in an 'FB'
    extra field, as torch's writer pads). Every 32 MB written, the kernel is asked to start writing it to
    disk (exmed_bert.io.start_writeback), so the fsync that commits the file has little left to wait for."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3                  # the same bytes on every OS
    info.external_attr = 0o600 << 16
    info.file_size = size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT   # zipfile's own rule when it opens a record for writing
    header = 30 + len(name.encode()) + 4 + (20 if zip64 else 0)
    pad = -(z.fp.tell() + header) % ALIGNMENT
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    with z.open(info, "w") as w:           # zipfile computes the CRC and rewrites the header when closed
        start = z.fp.tell()
        if start % ALIGNMENT:
            raise RuntimeError(f"{name}: record data not {ALIGNMENT}-byte aligned (zipfile wrote another header)")
        done = end = start
        for piece in pieces:
            end += w.write(memoryview(piece).cast("B"))
            if end - done >= _WRITEBACK:
                done = start_writeback(z.fp, done, end)
    return info
