"""Phecodes (PheWAS catalogue, version 1.2 style): normalisation to ClinVec's float-like form and
parents by dropping decimals. No table ships, so every phecode is unknown to `is_known`.
"""

from __future__ import annotations

import re

from .common import CodeError, clean

SYSTEM = "phecode"
MAX_CHARS = 7  # "1010.62"; phecodes run from 008 to the 1000s ("1010.6")
_CODE_RE = re.compile(r"^([0-9]{1,4})(?:\.([0-9]{1,2}))?$")


def normalize(code: str) -> str:
    """'008' -> '8.0', '250.2' -> '250.2', '8' -> '8.0', '8.50' -> '8.5' (as ClinVec writes them).

    The integer part loses its leading zeros and a trailing decimal zero is dropped, because
    phecodes are read and written as floats in the wild ("008.50" and "8.5" are the same phecode).
    """
    s = clean(code, SYSTEM, MAX_CHARS)
    m = _CODE_RE.match(s)
    if not m:
        raise CodeError(
            f"malformed {SYSTEM} code {s!r}: expected 1-4 digits with up to 2 decimals, e.g. '8.0', '250.21'"
        )
    whole, decimals = m.group(1), m.group(2) or ""
    return f"{int(whole)}.{decimals.rstrip('0') or '0'}"


def parents(code: str, include_groups: bool = False) -> list[str]:
    """'250.21' -> ['250.2', '250.0']; '250.2' -> ['250.0']; '250.0' -> [] (the root of its family)."""
    s = normalize(code)
    whole, decimals = s.split(".")
    chain = [f"{whole}.{decimals[:n]}" for n in range(len(decimals) - 1, 0, -1)]
    return chain + ([f"{whole}.0"] if decimals != "0" else [])
