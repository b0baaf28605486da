"""The demo embedding vocabulary: which `<system>:<code>` tokens have an embedding when no ClinVec
release is given, so that the generator's novel codes are exactly the ones missing from it.

demo = every code the modules emit normally + every ancestor of those codes and of the novel codes
(ICD-10-CM subcategories and categories, ATC levels 1-4) - the novel sibling codes themselves
(`modules.NOVEL_ICD` / `modules.NOVEL_ATC`). So a novel code's direct parent always has an embedding.
"""

from __future__ import annotations

import functools

from exmed_bert.clinvec.release import has_clinvec_files
from exmed_bert.errors import UserError
from exmed_bert.synthetic import modules as m


def token(system: str, code: str) -> str:
    return f"{system}:{code}"


def ancestors(code: str, system: str) -> list[str]:
    """Nearest first. ICD-10-CM: truncations down to the 3-character category ('E11.65' -> E11.6, E11);
    ATC: levels 4..1 ('A10BA02' -> A10BA, A10B, A10, A); CPT has no hierarchy here."""
    if system == "icd10cm":
        cat, _, sub = code.partition(".")
        return [f"{cat}.{sub[:i]}" for i in range(len(sub) - 1, 0, -1)] + ([cat] if sub else [])
    if system == "atc":
        return [code[:n] for n in (5, 4, 3, 1) if n < len(code)]
    return []


@functools.lru_cache(maxsize=1)
def emitted_codes() -> dict[str, tuple[str, ...]]:
    """Every code a module emits before novel replacement, per system, sorted."""
    icd = {c for mod in m.CONDITIONS for c, *_ in mod.icd}
    icd |= {c for c, *_ in m.NOISE_ICD + m.HOSPITAL_REASONS + m.OUTCOME_ICD}
    atc = {c for mod in m.CONDITIONS for c, *_ in mod.atc} | {c for c, *_ in m.NOISE_ATC} | {m.OUTCOME_ATC}
    cpt = {c for mod in m.CONDITIONS for c, _ in mod.cpt} | {c for c, _ in m.NOISE_CPT}
    cpt |= {c for c, *_ in m.OFFICE_VISITS} | {m.ADMISSION_CPT, m.DISCHARGE_CPT, *m.OUTCOME_CPT}
    return {"icd10cm": tuple(sorted(icd)), "atc": tuple(sorted(atc)), "cpt": tuple(sorted(cpt))}


def novel_codes() -> dict[str, tuple[str, ...]]:
    """The replacement siblings (never emitted normally, never in the demo vocabulary)."""
    return {"icd10cm": tuple(sorted(m.NOVEL_ICD.values())), "atc": tuple(sorted(m.NOVEL_ATC.values()))}


@functools.lru_cache(maxsize=1)
def _demo() -> frozenset[str]:
    out: set[str] = set()
    for system, codes in emitted_codes().items():
        for code in codes:
            out.add(token(system, code))
            out.update(token(system, a) for a in ancestors(code, system))
    novel = set()
    for system, codes in novel_codes().items():
        for code in codes:
            out.update(token(system, a) for a in ancestors(code, system))
            novel.add(token(system, code))
    return frozenset(out - novel)


def demo_codes() -> set[str]:
    """The deterministic demo embedding set, as `<system>:<code>` tokens (a fresh copy)."""
    return set(_demo())


def embedding_vocabulary(clinvec_dir: str | None) -> tuple[set[str], str]:
    """(vocabulary, source): the codes of the ClinVec release in `clinvec_dir`, or the demo set."""
    if clinvec_dir is None:
        return demo_codes(), "demo"
    if not has_clinvec_files(clinvec_dir):
        # Same rule as pretraining (resolve_clinvec_dir): without real files the demo embeddings are
        # used, so novel codes are those the demo lacks.
        return demo_codes(), "demo"
    # the loader's pandas loads only when a real release is read: 0.2 s to import (python -X importtime), more
    # than half of what generating 1,000 patients from the usual demo set takes
    from exmed_bert.clinvec.loader import available_codes

    vocab = set(available_codes(clinvec_dir))
    if not vocab:
        raise UserError(f"--clinvec-dir {clinvec_dir}: no codes found in this ClinVec release; "
                        "point it at the folder holding the ClinVec_*.csv files")
    return vocab, str(clinvec_dir)
