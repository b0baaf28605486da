"""ATC (WHO Anatomical Therapeutic Chemical): normalisation, the five-level hierarchy and a curated
table of commonly prescribed substances with every ancestor (data/atc.tsv, edited by hand).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .common import CodeError, clean

SYSTEM = "atc"
TABLE_PATH = Path(__file__).parent / "data" / "atc.tsv"
MAX_CHARS = 7

# The 14 anatomical main groups; a first letter outside them is a typo, not a newer code.
ANATOMICAL_GROUPS = "ABCDGHJLMNPRSV"
# Level by code length: N (1), N02 (2), N02B (3), N02BE (4), N02BE01 (5).
LEVEL_BY_LENGTH = {1: 1, 3: 2, 4: 3, 5: 4, 7: 5}
LEVEL_NAMES = {
    1: "anatomical main group",
    2: "therapeutic subgroup",
    3: "pharmacological subgroup",
    4: "chemical subgroup",
    5: "chemical substance",
}
_PREFIX_LENGTHS = (5, 4, 3, 1)  # parents, nearest first
_CODE_RE = re.compile(r"^[A-Z](?:[0-9]{2}(?:[A-Z](?:[A-Z](?:[0-9]{2})?)?)?)?$")

_names: dict[str, str] | None = None  # code -> name, all levels
_children: dict[str, list[str]] | None = None


def _load() -> dict[str, str]:
    global _names
    if _names is None:
        with open(TABLE_PATH, newline="", encoding="utf-8") as f:
            _names = {row["code"]: row["name"] for row in csv.DictReader(f, delimiter="\t")}
    return _names


def __getattr__(name: str):
    # SUBSTANCES (code -> name, level 5 only) is built on first access so importing stays free.
    if name == "SUBSTANCES":
        global SUBSTANCES
        SUBSTANCES = {c: n for c, n in _load().items() if len(c) == 7}
        return SUBSTANCES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def normalize(code: str) -> str:
    """' n02be01' -> 'N02BE01'. Raises CodeError unless the code has the shape of an ATC level."""
    s = clean(code, SYSTEM, MAX_CHARS)
    if len(s) not in LEVEL_BY_LENGTH or not _CODE_RE.match(s):
        raise CodeError(
            f"malformed {SYSTEM} code {s!r}: expected one of the shapes N, N02, N02B, N02BE, N02BE01 "
            "(letter, 2 digits, letter, letter, 2 digits)"
        )
    if s[0] not in ANATOMICAL_GROUPS:
        raise CodeError(
            f"malformed {SYSTEM} code {s!r}: the first letter must be an anatomical main group "
            f"({', '.join(ANATOMICAL_GROUPS)})"
        )
    return s


def level(code: str) -> int:
    """1 (anatomical main group) .. 5 (chemical substance)."""
    return LEVEL_BY_LENGTH[len(normalize(code))]


def parents(code: str, include_groups: bool = False) -> list[str]:
    """'N02BE01' -> ['N02BE', 'N02B', 'N02', 'N']; every level is a code, so groups add nothing."""
    s = normalize(code)
    return [s[:n] for n in _PREFIX_LENGTHS if n < len(s)]


def is_known(code: str) -> bool:
    return normalize(code) in _load()


def describe(code: str) -> str | None:
    return _load().get(normalize(code))


def children(code: str) -> list[str]:
    """Direct children present in the curated table, sorted by code."""
    global _children
    if _children is None:
        kids: dict[str, list[str]] = {}
        for c in sorted(_load()):
            if len(c) > 1:
                kids.setdefault(parents(c)[0], []).append(c)
        _children = kids
    return list(_children.get(normalize(code), []))


def is_leaf(code: str) -> bool:
    """ATC leaves are level-5 substances, known or not."""
    return len(normalize(code)) == 7


def leaves_under(code: str) -> list[str]:
    """All curated substances at or under an ATC group, sorted by code."""
    s = normalize(code)
    return sorted(c for c in _load() if len(c) == 7 and c.startswith(s))
