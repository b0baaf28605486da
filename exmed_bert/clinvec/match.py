"""Match vocabulary tokens to ClinVec vectors: exact code first, then (optionally) the nearest ancestor.

Both sides are normalised by `exmed_bert.codes.normalize` (dotted ICD, upper case, phecode 008 -> 8.0),
so "icd10cm:E1165" in a claims extract meets "E11.65:icd10cm" in the release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from exmed_bert import codes
from exmed_bert.clinvec.loader import ClinVecTable
from exmed_bert.clinvec.release import code_of

SOURCES = ("exact", "parent", "random")


@dataclass(frozen=True)
class Match:
    """Where one token's initial vector comes from. `row` indexes `tables[vocab].vectors`."""

    token: str
    system: str
    source: str                 # "exact" | "parent" | "random"
    matched: str | None = None  # the release's node_id, e.g. "E11:icd10cm"
    vocab: str | None = None
    row: int | None = None


def split_token(token: str) -> tuple[str, str] | None:
    """'icd10cm:E11.65' -> ('icd10cm', 'E11.65'); None for special tokens such as '[PAD]'."""
    if token.startswith("[") or ":" not in token:
        return None
    system, code = token.split(":", 1)
    return system.lower(), code


def index_tables(tables: dict[str, ClinVecTable], normalize: Callable[[str, str], str]) -> dict[tuple[str, str], tuple[str, int]]:
    """(system, normalised code) -> (vocab, row). Codes the code-system module rejects are left out."""
    out: dict[tuple[str, str], tuple[str, int]] = {}
    for vocab, table in tables.items():
        for row, node_id in enumerate(table.node_ids):
            try:
                key = (vocab, normalize(code_of(node_id), vocab))
            except ValueError:
                continue  # e.g. a code written in a form our code tables do not know
            out.setdefault(key, (vocab, row))
    return out


def match_tokens(tokens: Iterable[str], tables: dict[str, ClinVecTable], *, use_hierarchical_init: bool,
                 normalize: Callable[[str, str], str] | None = None,
                 parents: Callable[[str, str], list[str]] | None = None) -> list[Match]:
    """One Match per code token (special tokens are skipped), in vocabulary order.

    Tokens of a system that was not loaded, or whose code is malformed, become "random": the model keeps
    its own initialisation for them.
    """
    normalize = normalize or codes.normalize
    parents = parents or codes.parents
    index = index_tables(tables, normalize)
    out = []
    for token in tokens:
        parts = split_token(token)
        if parts is None:
            continue
        system, code = parts
        out.append(_match_one(token, system, code, tables, index, use_hierarchical_init, normalize, parents))
    return out


def _match_one(token, system, code, tables, index, hierarchical, normalize, parents) -> Match:
    if system not in tables:
        return Match(token, system, "random")
    try:
        code = normalize(code, system)
    except ValueError:
        return Match(token, system, "random")
    hit = index.get((system, code))
    if hit is not None:
        return Match(token, system, "exact", tables[system].node_ids[hit[1]], *hit)
    if hierarchical:
        try:
            ancestors = parents(code, system)  # nearest first; [] for CPT
        except ValueError:
            ancestors = []
        for parent in ancestors:
            hit = index.get((system, parent))
            if hit is not None:
                return Match(token, system, "parent", tables[system].node_ids[hit[1]], *hit)
    return Match(token, system, "random")


def coverage_counts(matches: Iterable[Match]) -> dict[str, dict[str, int]]:
    """{"icd10cm": {"exact": n, "parent": n, "random": n}, ...}, systems in first-seen order."""
    out: dict[str, dict[str, int]] = {}
    for m in matches:
        out.setdefault(m.system, dict.fromkeys(SOURCES, 0))[m.source] += 1
    return out
