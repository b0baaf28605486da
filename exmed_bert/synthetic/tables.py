"""Disease modules compiled into numpy lookup tables: one global code id (gid) per emitted code, cumulative
weights for weighted draws, and the novel-replacement id of each code under a given embedding vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from exmed_bert.synthetic import modules as m
from exmed_bert.synthetic.embedding_vocab import emitted_codes, novel_codes, token

KINDS = ("icd10cm", "atc", "cpt")          # kind 0 diagnoses, 1 prescriptions, 2 procedures


@dataclass
class Draw:
    """A weighted choice of one code: gids (K,), cumulative weights per severity (K,) each ending at 1."""

    gids: np.ndarray
    cum_mild: np.ndarray
    cum_severe: np.ndarray

    def sample(self, rng: np.random.Generator, severe: np.ndarray) -> np.ndarray:
        u = rng.random(len(severe))
        last = len(self.gids) - 1
        i = np.where(severe, np.searchsorted(self.cum_severe, u, side="right"),
                     np.searchsorted(self.cum_mild, u, side="right"))
        return self.gids[np.minimum(i, last)]


@dataclass
class Compiled:
    """A condition with its codes as gids: icd Draw, drugs/procedures as (gid, P mild, P severe) lists."""

    cond: m.Condition
    icd: Draw
    atc: list[tuple[int, float, float]]
    cpt: list[tuple[int, float]]
    links: list[tuple[int, float]]          # (index of the earlier condition, weight)


class CodeTables:
    """All codes the generator can write, plus the novel mechanism for one embedding vocabulary."""

    def __init__(self, vocab: set[str] | frozenset[str], extra: dict[str, tuple[str, ...]] | None = None):
        """extra: more codes per system (the trajectory task's code space); None keeps the hf modules' gids."""
        codes = emitted_codes()
        novel = novel_codes()
        self.systems: list[str] = []
        self.codes: list[str] = []
        for kind, system in enumerate(KINDS):
            for code in sorted(set(codes[system]) | set(novel.get(system, ())) | set((extra or {}).get(system, ()))):
                self.systems.append(system)
                self.codes.append(code)
        self.index = {(s, c): i for i, (s, c) in enumerate(zip(self.systems, self.codes))}
        self.kind = np.array([KINDS.index(s) for s in self.systems], dtype=np.int64)
        # '{"code":"E11.65","date":"' - the writer appends the date and '"}'.
        self.prefix = ['{"code":' + json.dumps(c) + ',"date":"' for c in self.codes]
        self.tokens = [token(s, c) for s, c in zip(self.systems, self.codes)]
        self.in_vocab = np.array([t in vocab for t in self.tokens], dtype=bool)
        # replace[g] = gid of the novel sibling that stands in for g, or -1 when g cannot be replaced:
        # g must have an embedding (else it is novel already) and its sibling must not.
        self.replace = np.full(len(self.codes), -1, dtype=np.int64)
        for g, (s, c) in enumerate(zip(self.systems, self.codes)):
            sib = m.novel_sibling(c, s)
            if sib is not None and sib != c and self.in_vocab[g]:
                h = self.index[(s, sib)]
                if not self.in_vocab[h]:
                    self.replace[g] = h
        self.conditions = [self._compile(c) for c in m.CONDITIONS]
        self.noise_icd = self.draw(m.NOISE_ICD, "icd10cm")
        self.noise_atc = [(self.gid("atc", c), p) for c, p, _ in m.NOISE_ATC]
        self.noise_cpt = [(self.gid("cpt", c), p) for c, p in m.NOISE_CPT]
        self.office = self.draw(m.OFFICE_VISITS, "cpt")
        self.hospital_reasons = self.draw(m.HOSPITAL_REASONS, "icd10cm")
        self.outcome_icd = self.draw(m.OUTCOME_ICD, "icd10cm")
        self.outcome_cpt = [self.gid("cpt", c) for c in m.OUTCOME_CPT]
        self.outcome_atc = self.gid("atc", m.OUTCOME_ATC)
        self.admission = self.gid("cpt", m.ADMISSION_CPT)
        self.discharge = self.gid("cpt", m.DISCHARGE_CPT)

    def gid(self, system: str, code: str) -> int:
        return self.index[(system, code)]

    def draw(self, weighted: m.Weighted, system: str) -> Draw:
        gids = np.array([self.gid(system, c) for c, *_ in weighted], dtype=np.int64)
        mild = np.array([w for _, w, _ in weighted], dtype=float)
        severe = np.array([w for *_, w in weighted], dtype=float)
        return Draw(gids, np.cumsum(mild) / mild.sum(), np.cumsum(severe) / severe.sum())

    def _compile(self, c: m.Condition) -> Compiled:
        order = m.condition_index()
        return Compiled(
            cond=c,
            icd=self.draw(c.icd, "icd10cm"),
            atc=[(self.gid("atc", code), pm, ps) for code, pm, ps in c.atc],
            cpt=[(self.gid("cpt", code), p) for code, p in c.cpt],
            links=[(order[name], w) for name, w in c.links],
        )
