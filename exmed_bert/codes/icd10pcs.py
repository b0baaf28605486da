"""ICD-10-PCS procedure codes: normalisation, parents by prefix truncation and the section names.

A PCS code is always 7 characters, each axis one character (section, body system, root operation,
body part, approach, device, qualifier), so its ancestors are its 1..6-character prefixes. No code
table ships; the 17 sections (the first character) are known so that `describe("0")` works.
"""

from __future__ import annotations

import re

from .common import CodeError, clean

SYSTEM = "icd10pcs"
MAX_CHARS = 7  # "0QS734Z"

# Digits and letters except I and O (PCS leaves them out so they are never read as 1 and 0).
_AXIS = "[0-9A-HJ-NP-Z]"
_CODE_RE = re.compile(rf"^{_AXIS}{{7}}$")
_PREFIX_RE = re.compile(rf"^{_AXIS}{{1,7}}$")

SECTIONS: dict[str, str] = {
    "0": "Medical and Surgical",
    "1": "Obstetrics",
    "2": "Placement",
    "3": "Administration",
    "4": "Measurement and Monitoring",
    "5": "Extracorporeal or Systemic Assistance and Performance",
    "6": "Extracorporeal or Systemic Therapies",
    "7": "Osteopathic",
    "8": "Other Procedures",
    "9": "Chiropractic",
    "B": "Imaging",
    "C": "Nuclear Medicine",
    "D": "Radiation Therapy",
    "F": "Physical Rehabilitation and Diagnostic Audiology",
    "G": "Mental Health",
    "H": "Substance Abuse Treatment",
    "X": "New Technology",
}


def normalize(code: str) -> str:
    """' 0qs734z' -> '0QS734Z'. Raises CodeError unless it is 7 PCS characters."""
    s = clean(code, SYSTEM, MAX_CHARS)
    if not _CODE_RE.match(s):
        hint = " (I and O are not PCS characters)" if ("I" in s or "O" in s) else ""
        raise CodeError(
            f"malformed {SYSTEM} code {s!r}: expected 7 characters from 0-9 and A-Z without I and O, "
            f"e.g. '0QS734Z'{hint}"
        )
    return s


def lookup_key(code: str) -> str:
    """A code or one of its prefixes ('0QS'): the prefixes are the hierarchy's inner nodes."""
    s = clean(code, SYSTEM, MAX_CHARS)
    if not _PREFIX_RE.match(s):
        return normalize(s)  # raises with the message for a code
    return s


def parents(code: str, include_groups: bool = False) -> list[str]:
    """'0QS734Z' -> ['0QS734', '0QS73', '0QS7', '0QS', '0Q', '0'] (the last one is the section)."""
    key = lookup_key(code)
    return [key[:n] for n in range(len(key) - 1, 0, -1)]


def is_known(code: str) -> bool:
    return lookup_key(code) in SECTIONS


def describe(code: str) -> str | None:
    return SECTIONS.get(lookup_key(code))


def is_leaf(code: str) -> bool:
    return len(lookup_key(code)) == 7  # every complete PCS code is a leaf
