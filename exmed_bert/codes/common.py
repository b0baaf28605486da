"""Shared pieces of the code systems: the CodeError exception, input cleaning and the answers of a
system without a code table.

Every system module defines `normalize`, and the lookups its table (or its structure) can answer;
`exmed_bert.codes` dispatches to them by system name and gives the rest the table-less default.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

# Group ids are ranges such as "E08-E13" (ICD-10-CM block), "240-279" (ICD-9-CM chapter) or
# "99202-99215" (CPT range). They are never codes, so `normalize` rejects them; lookups accept them.
GROUP_RE = re.compile(r"^([0-9A-Z.]{3,6})-([0-9A-Z.]{3,6})$")


class CodeError(ValueError):
    """A code is malformed for its system, or the system is unknown. The message says why."""


# The lookups a system module may leave out, and what a system without a table answers for them:
# nothing is known about a well-formed code. The code is still checked first (`lookup_key` when the
# module defines one, for lookups that accept more than codes, else `normalize`), so a malformed
# code raises CodeError exactly as a module's own lookup would.
NO_TABLE: dict[str, object] = {
    "parents": [], "is_known": False, "describe": None, "children": [], "is_leaf": False, "leaves_under": [],
}


def lookup_or_default(module: ModuleType, name: str) -> Callable[..., object]:
    """`module`'s own `name` lookup, or the table-less default that checks the code and answers NO_TABLE."""
    own = getattr(module, name, None)
    if own is not None:
        return own
    check, answer = getattr(module, "lookup_key", module.normalize), NO_TABLE[name]

    def default(code: str, *args: object) -> object:
        check(code)
        return list(answer) if isinstance(answer, list) else answer  # a fresh list: callers may extend it

    default.__name__ = default.__qualname__ = f"{module.__name__.rsplit('.', 1)[-1]}.{name} (no table)"
    return default


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
