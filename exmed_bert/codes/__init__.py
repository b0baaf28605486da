"""Medical code systems: ICD-10-CM, ICD-9-CM, ATC, CPT, RxNorm, phecodes, ICD-10-PCS and ICD-9-CM
procedures behind one API.

Every function takes `(code, system)`; the per-system rules live in one module each. Two questions
have two functions: `is_valid` (well-formed, so `normalize` accepts it) and `is_known` (in our table).
Unknown but well-formed codes are normal (real data has codes newer than any table): they
normalise, get parents by truncation, and are only flagged by `is_known`. A system that ships no table
(phecode, RxNorm, ICD-9 procedures) leaves those lookups out of its module and gets one default
(`common.lookup_or_default`): the code is checked, then nothing is known about it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from . import atc, cpt, icd9cm, icd9proc, icd10cm, icd10pcs, phecode, rxnorm
from .common import NO_TABLE, CodeError, lookup_or_default

SYSTEMS = ("icd10cm", "icd9cm", "atc", "cpt", "rxnorm", "phecode", "icd10pcs", "icd9proc")
_MODULES: dict[str, ModuleType] = {
    "icd10cm": icd10cm, "icd9cm": icd9cm, "atc": atc, "cpt": cpt, "rxnorm": rxnorm, "phecode": phecode,
    "icd10pcs": icd10pcs, "icd9proc": icd9proc,
}
# Each system's lookups, its own or the table-less default, resolved once.
_LOOKUPS: dict[str, dict[str, Callable[..., object]]] = {
    system: {name: lookup_or_default(module, name) for name in NO_TABLE} for system, module in _MODULES.items()
}
# Token type ids used by the dataset (0 is reserved for special tokens). OTHER: a code of no system
# above (a lab, a SNOMED concept, ...), kept as a token "other:<family>//<code>" by `--other-codes keep`.
DIAGNOSIS, DRUG, PROCEDURE, OTHER = 1, 2, 3, 4
OTHER_SYSTEM = "other"
_TOKEN_TYPES = {
    "icd10cm": DIAGNOSIS, "icd9cm": DIAGNOSIS, "phecode": DIAGNOSIS,
    "atc": DRUG, "rxnorm": DRUG,
    "cpt": PROCEDURE, "icd10pcs": PROCEDURE, "icd9proc": PROCEDURE,
}

__all__ = [
    "SYSTEMS", "CodeError", "DIAGNOSIS", "DRUG", "PROCEDURE", "OTHER", "OTHER_SYSTEM",
    "normalize", "is_valid", "is_known", "parents", "describe", "children", "is_leaf",
    "leaves_under", "token_type",
]


def _module(system: str) -> ModuleType:
    module = _MODULES.get(system) if isinstance(system, str) else None
    if module is None:
        raise CodeError(f"unknown code system {system!r}; valid systems: {', '.join(SYSTEMS)}")
    return module


def _lookup(system: str, name: str) -> Callable[..., object]:
    _module(system)  # an unknown system raises CodeError listing the valid ones
    return _LOOKUPS[system][name]


def normalize(code: str, system: str) -> str:
    """Canonical form ('e1165' -> 'E11.65'); raises CodeError with the reason when malformed."""
    return _module(system).normalize(code)


def is_valid(code: str, system: str) -> bool:
    """Is `code` well-formed for `system` (known or not)? Never raises for a bad code."""
    module = _module(system)
    try:
        module.normalize(code)
    except CodeError:
        return False
    return True


def is_known(code: str, system: str) -> bool:
    """Is `code` (or a group id such as 'E08-E13') in the shipped table? False when malformed."""
    lookup = _lookup(system, "is_known")
    try:
        return lookup(code)
    except CodeError:
        return False


def parents(code: str, system: str, include_groups: bool = False) -> list[str]:
    """Ancestors, nearest first: parents('E11.65', 'icd10cm') == ['E11.6', 'E11'].

    include_groups appends the non-code groups: ICD-10-CM block and chapter ('E08-E13',
    'E00-E89'), ICD-9-CM chapter ('240-279'), CPT ranges ('99202-99215', '99202-99499').
    ICD-10-PCS parents are the code's prefixes down to its section ('0QS734Z' -> [..., '0Q', '0']).
    """
    return _lookup(system, "parents")(code, include_groups)


def describe(code: str, system: str) -> str | None:
    """Description from the table (CPT: our range label, never an AMA descriptor), else None."""
    return _lookup(system, "describe")(code)


def children(code: str, system: str) -> list[str]:
    """Direct children in the table (ICD-10-CM and ATC); [] for the flat or table-less systems."""
    return _lookup(system, "children")(code)


def is_leaf(code: str, system: str) -> bool:
    """ICD-10-CM: a known code without children (billable). ATC: level 5. CPT/RxNorm: any code.
    ICD-10-PCS: any 7-character code. ICD-9-CM/ICD-9 procedures/phecode: False (no table). False for
    malformed codes."""
    lookup = _lookup(system, "is_leaf")
    try:
        return lookup(code)
    except CodeError:
        return False


def leaves_under(code: str, system: str) -> list[str]:
    """All known leaf codes at or under `code` (an ICD-10-CM chapter/block/category, an ATC group,
    a CPT range). [] when the code is unknown."""
    return _lookup(system, "leaves_under")(code)


def token_type(system: str) -> int:
    """1 diagnosis (icd10cm, icd9cm, phecode), 2 drug (atc, rxnorm), 3 procedure (cpt, icd10pcs, icd9proc),
    4 other ("other": codes of no system here, kept by `--other-codes keep`)."""
    if system == OTHER_SYSTEM:
        return OTHER
    _module(system)
    return _TOKEN_TYPES[system]
