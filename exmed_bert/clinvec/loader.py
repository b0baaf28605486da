"""Reader for the ClinVec release: the tab-separated node table plus one `ClinVec_<vocab>.csv` per vocabulary
(file names and vocabularies: clinvec/release.py).

Rows of a vector file are joined to `ClinGraph_nodes.csv` by their `node_index` column, never by row
position, and everything read is checked: one bad file is one `UserError` line naming it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from exmed_bert.clinvec.release import (DIM, NODE_TABLE, NTYPE_ALIASES, README_HINT, VOCAB_TYPES,
                                        check_vocab_types, code_of, expected_dim, files_found, ntype_matches,
                                        vocab_file)
from exmed_bert.codes import normalize
from exmed_bert.errors import UserError

log = logging.getLogger("exmed_bert.clinvec")

_INDEX_HEADERS = {"", "node_index", "unnamed: 0", "index"}


@dataclass
class ClinVecTable:
    """One vocabulary's vectors, joined to the node table. Row i of `vectors` belongs to `node_ids[i]`."""

    vocab: str
    node_ids: list[str]        # as in the node table, e.g. "E11.65:icd10cm"
    node_index: np.ndarray     # int64 (N,) global ClinGraph node index
    vectors: np.ndarray        # float32 (N, dim)

    @property
    def codes(self) -> list[str]:
        return [code_of(n) for n in self.node_ids]


def read_node_table(clinvec_dir: str | Path):
    """ClinGraph_nodes.csv -> DataFrame(node_id, ntype) indexed by unique int64 node_index."""
    path = Path(clinvec_dir) / NODE_TABLE
    if not path.is_file():
        raise UserError(f"{path}: ClinVec node table not found; copy {NODE_TABLE} from the release next to "
                        f"the ClinVec_*.csv files ({README_HINT}); files found: {', '.join(files_found(clinvec_dir)) or 'none'}")
    try:
        df = pd.read_csv(path, sep="\t", engine="c", dtype=str, keep_default_na=False,
                         usecols=lambda c: c in ("node_id", "ntype", "node_index"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; re-download {NODE_TABLE} ({README_HINT})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise UserError(f"{path}: cannot read the node table: {_first_line(e)}") from None
    missing = [c for c in ("node_id", "ntype", "node_index") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected a TAB-separated table "
                        f"with node_id, node_name, ntype, node_index ({README_HINT})")
    idx = pd.to_numeric(df["node_index"], errors="coerce")
    bad = np.flatnonzero(idx.isna().to_numpy() | (idx.to_numpy() % 1 != 0))
    if len(bad):
        raise UserError(f"{path}: line {bad[0] + 2}: node_index {df['node_index'].iloc[bad[0]]!r} is not an integer")
    df.index = pd.Index(idx.astype(np.int64), name="node_index")
    if not df.index.is_unique:
        dup = df.index[df.index.duplicated()][0]
        raise UserError(f"{path}: node_index {dup} appears more than once; re-download {NODE_TABLE}")
    return df[["node_id", "ntype"]]


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _sniff_layout(path: Path, dim: int) -> bool:
    """Check the header; returns True when the index column has its own header field.

    Two layouts come out of pandas' `to_csv`: a header with an empty (or `node_index`) first field and
    `dim` value names, or a header of `dim` names only, with each data row one field longer.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\r\n").split(",")
        first = f.readline().rstrip("\r\n").split(",")
    if header == [""] or (len(header) == 1 and first == [""]):
        raise UserError(f"{path}: empty file; re-download it ({README_HINT})")
    if len(first) == len(header) + 1 and len(header) == dim:
        return False  # implicit index column
    name = header[0].strip().strip('"').lower()
    if name not in _INDEX_HEADERS:
        raise UserError(f"{path}: first column must be the node_index (empty header or 'node_index'), "
                        f"found '{header[0]}'")
    if len(header) - 1 != dim:
        raise UserError(f"{path}: {len(header) - 1} value columns, expected {dim} (every ClinVec file has "
                        f"node_index + {dim} values); the file is truncated or not a ClinVec file")
    return True


def read_vectors(path: str | Path, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """One ClinVec_<vocab>.csv -> (node_index int64 (N,), vectors float32 (N, dim)), fully checked."""
    path = Path(path)
    _sniff_layout(path, dim)
    names = ["node_index", *range(dim)]
    try:
        # header=None + skiprows=1 reads both layouts the same way: node_index then `dim` floats.
        df = pd.read_csv(path, header=None, skiprows=1, names=names, engine="c",
                         dtype={"node_index": np.float64, **{i: np.float32 for i in range(dim)}},
                         index_col=False)
    except pd.errors.ParserError as e:
        raise UserError(f"{path}: rows have different widths ({_first_line(e)}); "
                        f"expected node_index + {dim} values per row") from None
    except (ValueError, TypeError):
        raise UserError(f"{path}: {_find_non_numeric(path, dim)}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; re-download it ({README_HINT})") from None
    if df.empty:
        raise UserError(f"{path}: no rows; re-download it ({README_HINT})")
    values = df[list(range(dim))].to_numpy(dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise UserError(f"{path}: line {row + 2}: value column {col + 1} is {values[row, col]} "
                        f"(empty, missing, NaN or infinite); every value must be a finite number")
    index = df["node_index"].to_numpy()
    bad = np.flatnonzero(~np.isfinite(index) | (index % 1 != 0))
    if len(bad):
        raise UserError(f"{path}: line {bad[0] + 2}: node_index {index[bad[0]]} is not an integer")
    return index.astype(np.int64), values


def _find_non_numeric(path: Path, dim: int) -> str:
    """Slow path, only after the fast parser failed: say which line and column is not a number."""
    df = pd.read_csv(path, header=None, skiprows=1, dtype=str, keep_default_na=False, engine="c",
                     names=["node_index", *range(dim)], index_col=False)
    for col in df.columns:
        bad = pd.to_numeric(df[col].replace("", "nan"), errors="coerce").isna() & (df[col] != "")
        bad &= ~df[col].str.strip().str.lower().isin(["nan", "inf", "-inf", "infinity", "-infinity"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            what = "node_index" if col == "node_index" else f"value column {col + 1}"
            return f"line {row + 2}: {what} is {df[col].iloc[row]!r}, not a number"
    return "value columns are not all numbers"


def join_vectors(path: Path, vocab: str, nodes, index: np.ndarray, vectors: np.ndarray) -> ClinVecTable:
    """Attach node ids by node_index and check each joined ntype is this file's vocabulary."""
    pos = nodes.index.get_indexer(index)
    missing = np.flatnonzero(pos < 0)
    if len(missing):
        raise UserError(f"{path}: line {missing[0] + 2}: node_index {index[missing[0]]} is not in {NODE_TABLE} "
                        f"({len(missing)} such rows); the vector file and node table come from different releases")
    if len(np.unique(index)) != len(index):
        dup = index[np.flatnonzero(np.diff(np.sort(index)) == 0)[0]]
        raise UserError(f"{path}: node_index {dup} appears more than once")
    ntypes = nodes["ntype"].to_numpy()[pos]
    ok = np.array([ntype_matches(t, vocab) for t in np.unique(ntypes)])
    wrong_types = set(np.unique(ntypes)[~ok])
    if wrong_types:
        row = next(i for i, t in enumerate(ntypes) if t in wrong_types)
        raise UserError(f"{path}: line {row + 2}: node_index {index[row]} is {nodes['node_id'].to_numpy()[pos[row]]!r} "
                        f"with ntype {ntypes[row]!r}, but this file holds {vocab} vectors; the node table and "
                        "vector files do not belong together")
    return ClinVecTable(vocab, nodes["node_id"].to_numpy()[pos].tolist(), index, vectors)


def load_clinvec(clinvec_dir: str | Path, vocab_types) -> dict[str, ClinVecTable]:
    """Load and validate the requested vocabularies from a release (or demo) folder."""
    clinvec_dir = Path(clinvec_dir)
    vocabs = check_vocab_types(vocab_types)
    paths = {v: clinvec_dir / vocab_file(v) for v in vocabs}
    absent = [p.name for p in paths.values() if not p.is_file()]
    if absent:
        raise UserError(f"{clinvec_dir}: {', '.join(absent)} not found (requested by --vocab-types); files found: "
                        f"{', '.join(files_found(clinvec_dir)) or 'none'} ({README_HINT})")
    nodes = read_node_table(clinvec_dir)
    dim = expected_dim(clinvec_dir)
    out = {}
    big = sum(p.stat().st_size for p in paths.values()) > 50 * 2**20  # the release's files take seconds
    for v in tqdm(vocabs, desc="ClinVec", unit="file", disable=not big, leave=False):
        index, vectors = read_vectors(paths[v], dim)
        out[v] = join_vectors(paths[v], v, nodes, index, vectors)
        log.info("ClinVec %s: %d vectors x %d from %s", v, *vectors.shape, paths[v])
    return out


def available_codes(clinvec_dir: str | Path, vocab_types=None) -> set[str]:
    """Tokens "<system>:<code>" (normalised) that the node table holds for code-system vocabularies.

    `vocab_types=None` means every code system whose ClinVec_<vocab>.csv is present. Reads only the
    node table, so it is fast; codes the code-system module rejects are skipped.
    """
    clinvec_dir = Path(clinvec_dir)
    if vocab_types is None:
        vocabs = [v for v in VOCAB_TYPES if (clinvec_dir / vocab_file(v)).is_file()]
    else:
        vocabs = check_vocab_types(vocab_types)
    nodes = read_node_table(clinvec_dir)
    out: set[str] = set()
    skipped = 0
    types = nodes["ntype"].str.strip().str.lower()
    for v in vocabs:
        sel = types.isin({v, *NTYPE_ALIASES.get(v, ())})
        for node_id in nodes.loc[sel.to_numpy(), "node_id"]:
            try:
                out.add(f"{v}:{normalize(code_of(node_id), v)}")
            except ValueError:
                skipped += 1
    if skipped:
        log.debug("available_codes: %d node ids rejected by the code-system module", skipped)
    return out
