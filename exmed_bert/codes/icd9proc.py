"""ICD-9-CM procedure codes (volume 3): normalisation and parents by truncation.

A code is a 2-digit category, a dot and 1-2 digits (`39.61`); claims and MIMIC write it without the
dot (`3961`). No code table ships (ICD-9-CM is frozen since 2015), so every code is unknown.
"""

from __future__ import annotations

import re

from .common import CodeError, clean

SYSTEM = "icd9proc"
MAX_CHARS = 5  # "39.61"
_CODE_RE = re.compile(r"^[0-9]{2}\.[0-9]{1,2}$")
_CATEGORY_RE = re.compile(r"^[0-9]{2}$")


def normalize(code: str) -> str:
    """'3961' -> '39.61', '881' -> '88.1', '00.66' stays. A bare category ('39') is not a code."""
    s = clean(code, SYSTEM, MAX_CHARS)
    if "." not in s and len(s) > 2:
        s = s[:2] + "." + s[2:]
    if not _CODE_RE.match(s):
        hint = ""
        if s.isdigit() and len(s) <= 2:
            hint = " (a category alone, or leading zeros lost? procedure codes have 3-4 digits, e.g. '0066')"
        raise CodeError(
            f"malformed {SYSTEM} code {s!r}: expected 2 digits, a dot and 1-2 digits, e.g. '39.61' "
            f"(or '3961'){hint}"
        )
    return s


def lookup_key(code: str) -> str:
    """A code or a 2-digit category ('39'), the root of its family."""
    s = clean(code, SYSTEM, MAX_CHARS)
    return s if _CATEGORY_RE.match(s) else normalize(s)


def parents(code: str, include_groups: bool = False) -> list[str]:
    """'39.61' -> ['39.6', '39']; '39' -> []."""
    key = lookup_key(code)
    chain = []
    while "." in key:
        key = key[:-1].rstrip(".")
        chain.append(key)
    return chain
