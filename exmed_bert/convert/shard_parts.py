"""Row-group parts of a MEDS shard, so conversion workers can share one large shard.

A shard sorted by subject_id (as MEDS writes them) is cut at row-group starts by subject_id ranges taken
from the row groups' statistics (`shard_parts`, no data read); a part's reader keeps only its subjects
(`batches`, `subjects_in`), so every subject is read once, whole, by the part that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exmed_bert.convert import arrow
from exmed_bert.convert.meds_names import as_file, current


@dataclass(frozen=True)
class ShardPart:
    """Row groups [first, end) of a shard sorted by subject_id, and the subjects lo <= id < hi taken from
    them (None: unbounded). A subject's rows may start in the row group before `first`: the part then
    starts there, and the part before it leaves those rows out."""
    first: int
    end: int
    lo: int | None = None
    hi: int | None = None


def shard_parts(path: Path, rows_per_part: int) -> list[ShardPart] | None:
    """Cut a shard into parts of about `rows_per_part` rows at row-group starts, by subject_id ranges from
    the row groups' statistics, so conversion workers can share one large shard. None (read it whole, as
    one piece) unless subject_id is an integer column with exact min/max statistics, no nulls, and row
    groups in subject order."""
    try:
        md = pq.ParquetFile(path).metadata
        schema = md.schema.to_arrow_schema()
        col = schema.get_field_index(as_file(["subject_id"], schema.names)[0])
        if col < 0 or not pa.types.is_integer(schema.field(col).type) or md.num_row_groups < 2:
            return None
        stats = [md.row_group(i).column(col).statistics for i in range(md.num_row_groups)]
    except (pa.ArrowException, OSError):
        return None   # the conversion reports it
    if any(st is None or not st.has_min_max or st.null_count for st in stats):
        return None
    mins, maxs = [st.min for st in stats], [st.max for st in stats]
    if any(maxs[i] > mins[i + 1] for i in range(len(stats) - 1)):
        return None
    cuts, rows = [0], 0
    for j in range(len(stats)):
        if rows >= rows_per_part and mins[j] > mins[cuts[-1]]:
            cuts.append(j)
            rows = 0
        rows += md.row_group(j).num_rows
    if len(cuts) < 2:
        return None
    parts = []
    for k, start in enumerate(cuts):
        end = cuts[k + 1] if k + 1 < len(cuts) else len(stats)
        lo = mins[start] if k else None
        first = start
        while k and first > 0 and maxs[first - 1] >= lo:   # the first subject's rows may begin earlier
            first -= 1
        parts.append(ShardPart(first, end, lo, mins[end] if end < len(stats) else None))
    return parts


def subjects_in(table, part: ShardPart | None):
    """The rows of `table` (or a record batch) whose subject_id is in the part's range."""
    if part is None or (part.lo is None and part.hi is None):
        return table
    ids, t = table.column(table.schema.get_field_index("subject_id")), table.schema.field("subject_id").type
    keep = None
    for bound, op in ((part.lo, pc.greater_equal), (part.hi, pc.less)):
        if bound is not None:
            m = op(ids, arrow.scalar(bound, t))
            keep = m if keep is None else pc.and_(keep, m)
    return table.filter(keep)


def batches(file: pq.ParquetFile, rows: int, columns: list, part: ShardPart | None) -> Iterator:
    """Non-empty record batches of `file` (of the part's row groups and subjects), `columns` by their current
    MEDS names (a file with older ones is read under those, `meds_names`)."""
    groups = None if part is None else list(range(part.first, part.end))
    names = file.schema_arrow.names
    for batch in file.iter_batches(batch_size=rows, columns=as_file(columns, names), row_groups=groups):
        batch = subjects_in(current(batch), part)
        if batch.num_rows:
            yield batch
