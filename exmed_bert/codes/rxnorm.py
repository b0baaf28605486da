"""RxNorm ingredient concepts (RxCUIs): normalisation only. RxNorm's hierarchy is a graph of concept
types, not a code tree, so there are no parents; no table ships, so every RxCUI is unknown.
"""

from __future__ import annotations

from .common import CodeError, clean

SYSTEM = "rxnorm"
MAX_CHARS = 10  # RxCUIs have up to 7 digits today; a few leading zeros are tolerated


def normalize(code: str) -> str:
    """' 6809' -> '6809', '006809' -> '6809'. An RxCUI is a positive integer written in digits."""
    s = clean(code, SYSTEM, MAX_CHARS)
    if not s.isascii() or not s.isdigit() or int(s) == 0:
        hint = " (read from a float column? drop the '.0')" if s.endswith(".0") else ""
        raise CodeError(f"malformed {SYSTEM} code {s!r}: an RxCUI is a positive integer, e.g. '6809'{hint}")
    return str(int(s))


def is_leaf(code: str) -> bool:
    return bool(normalize(code))  # flat system: every RxCUI is a leaf
