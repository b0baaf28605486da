"""`--value-bins N`: a MEDS row's `numeric_value` binned per code into N quantile bins, learned on the train split.

With `--other-codes keep`, an other code's token carries its row's bin: `other:LAB//50912//mg/dL|q3` (bins
q1..qN, 1-based; a row without a finite value, or a code with no value in the train split, keeps the plain
token). The edges are learned before the conversion pass, in a first pass over (subject_id, code,
numeric_value) of every shard, streamed in batches: only rows of subjects assigned to the train split
(the same assignment the conversion uses: MEDS subject splits or the seeded id hash) are sampled, so
val/test values never move an edge. Memory is bounded by a reservoir of at most SAMPLE_PER_CODE values per
code (float64; exact quantiles for codes with fewer train values, a uniform random sample's quantiles
beyond, seeded so reruns give the same edges).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exmed_bert.convert import arrow
from exmed_bert.convert.meds_names import as_file, current

VALUE_COLUMN = "numeric_value"
SAMPLE_PER_CODE = 10_000
BIN_SEPARATOR = "|q"


class Reservoir:
    """A uniform sample of at most `size` values from a stream (Algorithm R, vectorised per chunk)."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng, self.seen = size, rng, 0
        self.values = np.empty(0, dtype=np.float64)

    def add(self, values: np.ndarray) -> None:
        room = self.size - len(self.values)
        if room > 0:
            self.values = np.concatenate([self.values, values[:room]])
        rest = values[max(room, 0):]
        if len(rest):
            index = self.seen + max(room, 0) + np.arange(len(rest))   # 0-based position in the stream
            slot = (self.rng.random(len(rest)) * (index + 1)).astype(np.int64)
            keep = slot < self.size
            self.values[slot[keep]] = rest[keep]   # later values win a shared slot, as in the sequential form
        self.seen += len(values)


def bin_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """The n_bins - 1 interior quantile edges of `values` (bin k holds edge[k-2] <= v < edge[k-1])."""
    return np.quantile(values, np.arange(1, n_bins) / n_bins)


def bin_of(value: float, edges: np.ndarray) -> int:
    """1-based bin of `value` (values at an edge go to the upper bin)."""
    return int(np.searchsorted(edges, value, side="right")) + 1


def learn_edges(reader, is_train: Callable[[str], bool], n_bins: int, *, sample: int = SAMPLE_PER_CODE,
                seed: int = 0) -> dict[str, np.ndarray]:
    """{MEDS code string: edges} for the other codes (reader._parse(code).kind == "other") with finite
    numeric values in rows of train subjects. `is_train(str(subject_id))` decides a subject's split."""
    rng = np.random.default_rng(seed)
    pools: dict[str, Reservoir] = {}
    train: dict = {}
    for path in reader.files:
        file = pq.ParquetFile(path)
        if VALUE_COLUMN not in file.schema_arrow.names:
            continue
        names = file.schema_arrow.names
        for batch in file.iter_batches(batch_size=reader.batch_rows,
                                       columns=as_file(["subject_id", "code", VALUE_COLUMN], names)):
            batch = current(batch)
            value = pc.cast(batch.column(2), pa.float64())
            ok = pc.and_(pc.is_valid(value), pc.is_finite(value))
            if not pc.any(ok).as_py():
                continue
            table = pa.Table.from_batches([batch]).filter(ok)
            sids = table["subject_id"].to_pylist()
            for sid in set(sids) - train.keys():
                train[sid] = bool(is_train(str(sid)))
            mask = np.fromiter((train[s] for s in sids), dtype=bool, count=len(sids))
            if not mask.any():
                continue
            codes = pc.cast(table["code"], pa.string()).filter(arrow.array(mask, pa.bool_()))
            values = pc.cast(table[VALUE_COLUMN], pa.float64()).filter(arrow.array(mask, pa.bool_()))
            values = arrow.numpy(values)
            enc = pc.dictionary_encode(codes).combine_chunks()
            idx = arrow.numpy(enc.indices)
            order = np.argsort(idx, kind="stable")   # file order within each code
            bounds = np.searchsorted(idx[order], np.arange(len(enc.dictionary) + 1))
            for k, code in enumerate(enc.dictionary.to_pylist()):
                if code is None or reader._parse(code).kind != "other":
                    continue
                pool = pools.get(code)
                if pool is None:
                    pool = pools[code] = Reservoir(sample, rng)
                pool.add(values[order[bounds[k]:bounds[k + 1]]])
    return {code: bin_edges(pool.values, n_bins) for code, pool in pools.items() if len(pool.values)}
