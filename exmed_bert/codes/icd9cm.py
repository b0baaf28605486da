"""ICD-9-CM diagnosis codes: normalisation, parents by truncation and the chapter ranges.

No code table ships (ICD-9-CM is frozen since 2015 and only needed for legacy claims), so every
code is unknown to `is_known`; the chapters are known so that parents(include_groups=True) works.
"""

from __future__ import annotations

import re

from .common import CodeError, clean, group_key

SYSTEM = "icd9cm"
MAX_CHARS = 6  # "250.02", "V45.81", "E849.0"

# Numeric (250.02), V codes (V45.81): 3 characters + up to 2 decimals. E codes: 4 + up to 1.
_CODE_RE = re.compile(r"^(?:[0-9]{3}(?:\.[0-9]{1,2})?|V[0-9]{2}(?:\.[0-9]{1,2})?|E[0-9]{3}(?:\.[0-9])?)$")

CHAPTERS: dict[str, str] = {
    "001-139": "Infectious and parasitic diseases",
    "140-239": "Neoplasms",
    "240-279": "Endocrine, nutritional and metabolic diseases, and immunity disorders",
    "280-289": "Diseases of the blood and blood-forming organs",
    "290-319": "Mental disorders",
    "320-389": "Diseases of the nervous system and sense organs",
    "390-459": "Diseases of the circulatory system",
    "460-519": "Diseases of the respiratory system",
    "520-579": "Diseases of the digestive system",
    "580-629": "Diseases of the genitourinary system",
    "630-679": "Complications of pregnancy, childbirth, and the puerperium",
    "680-709": "Diseases of the skin and subcutaneous tissue",
    "710-739": "Diseases of the musculoskeletal system and connective tissue",
    "740-759": "Congenital anomalies",
    "760-779": "Certain conditions originating in the perinatal period",
    "780-799": "Symptoms, signs, and ill-defined conditions",
    "800-999": "Injury and poisoning",
    "V01-V91": "Factors influencing health status and contact with health services",
    "E000-E999": "External causes of injury and poisoning",
}


def normalize(code: str) -> str:
    """'25002' -> '250.02', 'v4581' -> 'V45.81', 'E8490' -> 'E849.0'."""
    s = clean(code, SYSTEM, MAX_CHARS)
    head = 4 if s.startswith("E") else 3  # E codes carry 3 digits after the letter
    if "." not in s and len(s) > head:
        s = s[:head] + "." + s[head:]
    if not _CODE_RE.match(s):
        whole = s.split(".")[0]
        hint = ""
        if whole.isdigit() and len(whole) < 3:
            hint = f" (leading zeros lost? did you mean {s.zfill(len(s) + 3 - len(whole))!r})"
        raise CodeError(
            f"malformed {SYSTEM} code {s!r}: expected 3 digits, V + 2 digits (each with up to 2 "
            f"decimals) or E + 3 digits (up to 1 decimal), e.g. '250.02', 'V45.81', 'E849.0'{hint}"
        )
    return s


def lookup_key(code: str) -> str:
    """A code (normalised) or a chapter id such as '240-279'."""
    return group_key(code) or normalize(code)


def _chapter(code: str) -> str | None:
    head = code.split(".")[0]  # "250", "V45", "E849"
    for chapter in CHAPTERS:
        lo, hi = chapter.split("-")
        # Compare like with like: numeric with numeric, V with V, E with E (they differ in length).
        if len(lo) == len(head) and lo[0].isdigit() == head[0].isdigit() and lo <= head <= hi:
            return chapter
    return None


def parents(code: str, include_groups: bool = False) -> list[str]:
    """'250.02' -> ['250.0', '250'] (+ ['240-279'] with include_groups)."""
    key = lookup_key(code)
    if "-" in key:
        return []
    chain = []
    s = key
    while "." in s:
        s = s[:-1].rstrip(".")
        chain.append(s)
    if include_groups:
        chapter = _chapter(key)
        chain += [chapter] if chapter else []
    return chain


def is_known(code: str) -> bool:
    return lookup_key(code) in CHAPTERS


def describe(code: str) -> str | None:
    return CHAPTERS.get(lookup_key(code))
