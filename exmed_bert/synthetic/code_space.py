"""The trajectory task's code space, read from the real tables the project ships (exmed_bert/codes/data):
each stage's diagnosis draw is its head codes plus every other leaf of its tail categories, Zipf-weighted,
so the rare codes of a process are siblings (same ICD-10-CM category, same ATC group) of its common ones.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from exmed_bert import codes
from exmed_bert.synthetic import processes as pr
from exmed_bert.synthetic.tables import CodeTables, Draw


def _split(spec: str) -> list[str]:
    return spec.split()


def _leaf(code: str, system: str) -> str:
    if not codes.is_leaf(code, system):
        raise ValueError(f"{system} code {code} in synthetic/processes.py is not a leaf of the project's table")
    return code


def _tail_order(code: str) -> str:
    """A fixed pseudo-random order of the tail (not alphabetical, so rare codes spread over subcategories)."""
    return hashlib.md5(code.encode()).hexdigest()


def _family(head: str, tail: str, system: str) -> list[str]:
    """Head codes in their given order, then every other leaf under the tail groups in a fixed order."""
    heads = [_leaf(c, system) for c in _split(head)]
    seen = set(heads)
    rest = sorted({leaf for g in _split(tail) for leaf in codes.leaves_under(g, system)} - seen, key=_tail_order)
    if tail and not rest:
        raise ValueError(f"{system} tail groups {tail!r} in synthetic/processes.py hold no leaf codes")
    return heads + rest


def zipf_weights(n_head: int, n_tail: int, tail_mass: float) -> np.ndarray:
    """(n_head + n_tail,) probabilities: head ranks 1..h ~ r^-HEAD_ZIPF with mass 1 - tail_mass, tail ranks
    h+1.. ~ r^-TAIL_ZIPF with mass tail_mass (all of it to the head when there is no tail)."""
    head = np.arange(1, n_head + 1, dtype=float) ** -pr.HEAD_ZIPF
    tail = np.arange(n_head + 1, n_head + n_tail + 1, dtype=float) ** -pr.TAIL_ZIPF
    if n_tail == 0:
        return head / head.sum()
    if n_head == 0:
        return tail / tail.sum()
    return np.concatenate([head / head.sum() * (1 - tail_mass), tail / tail.sum() * tail_mass])


def _drugs(spec: str) -> list[str]:
    """ATC substances of the listed groups (or substances), group by group, the groups' own order kept."""
    out: list[str] = []
    for g in _split(spec):
        leaves = codes.leaves_under(g, "atc")
        if not leaves:
            raise ValueError(f"ATC group {g} in synthetic/processes.py has no substances in the project's table")
        out.extend(c for c in leaves if c not in out)
    return out


def _drug_weights(n: int) -> np.ndarray:
    """The first substance of the list takes 1 - DRUG_TAIL_MASS, the others share the rest Zipf-wise."""
    return zipf_weights(1, n - 1, pr.DRUG_TAIL_MASS)


@functools.lru_cache(maxsize=1)
def trajectory_codes() -> dict[str, tuple[str, ...]]:
    """Every code the trajectory task can emit beyond the hf modules' codes, per system, sorted."""
    icd, atc, cpt = set(), set(), set()
    for stage in [s for p in pr.PROCESSES for s in p.stages] + [pr.BACKGROUND]:
        icd.update(_family(stage.icd, stage.icd_tail, "icd10cm"))
        atc.update(_drugs(stage.drugs))
        cpt.update(c.rsplit(":", 1)[0] for c in _split(stage.cpt))
    for p in pr.PROCESSES:
        atc.update(_drugs(p.treatment))
    atc.update(c.rsplit(":", 1)[0] for c in _split(pr.BACKGROUND_DRUGS))
    return {"icd10cm": tuple(sorted(icd)), "atc": tuple(sorted(atc)), "cpt": tuple(sorted(cpt))}


@dataclass
class CompiledStage:
    icd: Draw                               # diagnosis draw (head + rare relatives)
    cpt: list[tuple[int, float]]            # (gid, P per visit)
    drugs: Draw | None                      # the drug started on entering the stage
    stage: pr.Stage


@dataclass
class CompiledProcess:
    process: pr.Process
    stages: list[CompiledStage]
    treatment: Draw
    links: list[tuple[int, float]]


def _draw(t: CodeTables, system: str, gids_codes: list[str], p: np.ndarray) -> Draw:
    cum = np.cumsum(p)
    cum /= cum[-1]
    return Draw(np.array([t.gid(system, c) for c in gids_codes], dtype=np.int64), cum, cum)


def _stage(t: CodeTables, s: pr.Stage) -> CompiledStage:
    fam = _family(s.icd, s.icd_tail, "icd10cm")
    n_head = len(_split(s.icd))
    icd = _draw(t, "icd10cm", fam, zipf_weights(n_head, len(fam) - n_head, pr.TAIL_MASS))
    drugs = _drugs(s.drugs)
    return CompiledStage(icd=icd, cpt=[(t.gid("cpt", c), float(p)) for c, p in
                                       (x.rsplit(":", 1) for x in _split(s.cpt))],
                         drugs=_draw(t, "atc", drugs, _drug_weights(len(drugs))) if drugs else None, stage=s)


def compile_processes(t: CodeTables) -> tuple[list[CompiledProcess], CompiledStage, list[tuple[int, float]]]:
    """(processes, background stage, background drugs as (gid, P per visit)) over the tables' gids."""
    order = pr.process_index()
    out = []
    for p in pr.PROCESSES:
        treat = _drugs(p.treatment)
        out.append(CompiledProcess(process=p, stages=[_stage(t, s) for s in p.stages],
                                   treatment=_draw(t, "atc", treat, _drug_weights(len(treat))),
                                   links=[(order[name], w) for name, w in p.links]))
    bg_drugs = [(t.gid("atc", c), float(p)) for c, p in (x.rsplit(":", 1) for x in _split(pr.BACKGROUND_DRUGS))]
    return out, _stage(t, pr.BACKGROUND), bg_drugs


def trajectory_tables(vocab: set[str] | frozenset[str]) -> CodeTables:
    """The hf modules' tables widened by the trajectory code space (gids are the trajectory task's own)."""
    return CodeTables(vocab, extra=trajectory_codes())
