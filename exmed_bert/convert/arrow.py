"""Arrow arrays built from their buffers, without `pyarrow.array()`: that call imports pandas whenever it
is installed (33 MB and 0.14 s in every conversion worker) just to check whether its input is a pandas
object. Only the types the MEDS reader needs are built here; anything else goes to `pyarrow.array()`.
Whole Parquet files are read with `read_parquet`, not `pq.read_table`, which imports pyarrow.dataset
and pandas with it (0.2 s, ~70 MB of peak).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_NUMPY = {pa_type(): np.dtype(name) for pa_type, name in (
    (pa.int8, "int8"), (pa.int16, "int16"), (pa.int32, "int32"), (pa.int64, "int64"), (pa.uint8, "uint8"),
    (pa.uint16, "uint16"), (pa.uint32, "uint32"), (pa.uint64, "uint64"), (pa.float16, "float16"),
    (pa.float32, "float32"), (pa.float64, "float64"))}


def read_parquet(path, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file (`columns` of it, or all), as `pq.read_table` reads a file: a column the file does
    not have is a KeyError (`ParquetFile.read` would leave it out without a word)."""
    with pq.ParquetFile(path) as f:
        missing = [c for c in columns or () if c not in f.schema_arrow.names]
        if missing:
            raise KeyError(f"no column {', '.join(missing)}")
        return f.read(columns=columns)


def array(values, type: pa.DataType) -> pa.Array:
    """`pa.array(values, type)` for a list (or numpy array) of bools, integers or non-null strings."""
    n = len(values)
    if pa.types.is_boolean(type):
        bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
        return pa.Array.from_buffers(type, n, [None, pa.py_buffer(bits)])
    if pa.types.is_integer(type):
        data = np.ascontiguousarray(values, dtype=_NUMPY[type])
        return pa.Array.from_buffers(type, n, [None, pa.py_buffer(data)])
    if (pa.types.is_string(type) or pa.types.is_large_string(type)) and all(isinstance(v, str) for v in values):
        encoded = [v.encode("utf-8") for v in values]
        offsets = np.zeros(n + 1, dtype=np.int64 if pa.types.is_large_string(type) else np.int32)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return pa.Array.from_buffers(type, n, [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])
    return pa.array(values, type=type)


def scalar(value, type: pa.DataType) -> pa.Scalar:
    """`pa.scalar(value, type)` (which imports pandas too) for the types of `array`."""
    return array([value], type)[0]


def numpy(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """`a.to_numpy()` (which imports pandas too) for a (chunked) array of integers, floats, booleans or
    dates (as day numbers) without nulls, read from its buffers; anything else goes to `to_numpy()`. The
    result may be a read-only view."""
    if isinstance(a, pa.ChunkedArray):
        parts = [numpy(c) for c in a.chunks]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else a.to_numpy()
    t = a.type
    if a.null_count or not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                            or pa.types.is_date32(t)):
        return a.to_numpy(zero_copy_only=False)
    buf = a.buffers()[1]
    if pa.types.is_boolean(t):
        bits = np.frombuffer(buf, dtype=np.uint8)
        return np.unpackbits(bits, count=a.offset + len(a), bitorder="little")[a.offset:].astype(bool)
    dtype = np.dtype(np.int32) if pa.types.is_date32(t) else _NUMPY[t]
    return np.frombuffer(buf, dtype=dtype, count=len(a), offset=a.offset * dtype.itemsize)
