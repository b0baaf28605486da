"""Shared pieces of the code systems: the CodeError exception and input cleaning.

Every system module exposes the same functions (normalize, parents, is_known, describe, children,
is_leaf, leaves_under); `exmed_bert.codes` dispatches to them by system name.
"""

from __future__ import annotations

import re

# Group ids are ranges such as "E08-E13" (ICD-10-CM block), "240-279" (ICD-9-CM chapter) or
# "99202-99215" (CPT range). They are never codes, so `normalize` rejects them; lookups accept them.
GROUP_RE = re.compile(r"^([0-9A-Z.]{3,6})-([0-9A-Z.]{3,6})$")


class CodeError(ValueError):
    """A code is malformed for its system, or the system is unknown. The message says why."""


def clean(code: object, system: str, max_chars: int) -> str:
    """Trim and upper-case `code`; reject non-strings, empty and over-long input.

    The length check runs before any pattern, so a 10,000-character cell fails fast and clearly.
    """
    if not isinstance(code, str):
        raise CodeError(f"{system} code must be a str, got {type(code).__name__} {_short(code)}")
    s = code.strip().upper()
    if not s:
        raise CodeError(f"empty {system} code")
    if len(s) > max_chars:
        raise CodeError(
            f"{system} code is too long ({len(s)} characters, at most {max_chars}): {_short(s)}"
        )
    return s


def group_key(code: object) -> str | None:
    """The trimmed, upper-cased group id when `code` looks like a range ("E08-E13"), else None."""
    if isinstance(code, str) and len(code) <= 32:
        s = code.strip().upper()
        if GROUP_RE.match(s):
            return s
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
