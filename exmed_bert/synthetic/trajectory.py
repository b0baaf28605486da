"""The trajectory task's simulation, vectorised over a chunk: each patient's latent disease processes (onset,
progression stages, treatment and its response) and the codes, drugs, procedures and stays they leave,
then the shared finish (labels from `trajectory_risk`, outcome admission, sorting, novel codes).

Days are window offsets (0 .. W-1); latent days may lie before the window (negative) or never come (NEVER).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from exmed_bert.synthetic import modules as m
from exmed_bert.synthetic import processes as pr
from exmed_bert.synthetic import task
from exmed_bert.synthetic.code_space import CompiledStage, compile_processes
from exmed_bert.synthetic.generator import (FEMALE_SHARE, FRAILTY_SIGMA, OFFICE_VISIT_P, Chunk, NovelController,
                                            Window, _Acc, _spread, finish_chunk, stays_before_outcome)
from exmed_bert.synthetic.tables import CodeTables
from exmed_bert.synthetic.trajectory_risk import NEVER, LatentState, calibrate_intercept, trajectory_logit

ONSET_SPAN_YEARS = 12.0      # onsets spread uniformly over the 12 years before the window end
DIAGNOSIS_DELAY_DAYS = 120   # mean days from the latent onset to the first code (exponential)
SECOND_CODE_P = 0.4          # P(a process visit codes a second diagnosis of its stage: co-occurrence)
CALIBRATION_PATIENTS = 50_000
CALIBRATION_SEED = 20261206  # fixed: the intercept does not depend on --seed or on N


@dataclass
class Latent:
    """Demographics, prediction dates and the latent state of one chunk of n patients."""

    female: np.ndarray       # (n,) bool
    birth: np.ndarray        # (n,) days since 1970-01-01
    age_end: np.ndarray      # (n,) years at the window end
    frail: np.ndarray        # (n,) lognormal utilisation multiplier, mean 1
    pred: np.ndarray         # (n,) prediction date, window offset
    state: LatentState       # (P, n) days
    has: np.ndarray          # (P, n) bool: onset before the window end
    pre: np.ndarray          # (P, n) bool: the treatment predates the onset (another indication)

    def age_at(self, day: np.ndarray, W: int) -> np.ndarray:
        return self.age_end - (W - 1 - day) / 365.25


def simulate_latent(rng: np.random.Generator, n: int, win: Window) -> Latent:
    """Who develops which process when, how fast it progresses, and when (and whether) it is treated."""
    W, P = win.days, len(pr.PROCESSES)
    female = rng.random(n) < FEMALE_SHARE
    age_end = 18.0 + 77.0 * rng.beta(1.6, 1.8, n)
    birth = win.start + W - 1 - (age_end * 365.25).astype(np.int64)
    age_dec = (age_end - 60.0) / 10.0
    log_frail = rng.normal(-FRAILTY_SIGMA ** 2 / 2, FRAILTY_SIGMA, n)
    pred = rng.integers(win.min_history, W - win.horizon, n)
    onset, stage2, stage3, diag, treat = (np.full((P, n), NEVER, dtype=np.int64) for _ in range(5))
    has, pre = np.zeros((P, n), bool), np.zeros((P, n), bool)
    order = pr.process_index()
    speed = np.exp(0.15 * age_dec + 0.3 * log_frail)           # older and frailer patients progress faster
    for i, p in enumerate(pr.PROCESSES):
        z = p.base + p.age * age_dec + p.female * female + 0.4 * log_frail
        for name, w in p.links:
            z = z + w * has[order[name]]
        has[i] = rng.random(n) < task.sigmoid(z)
        idx = np.flatnonzero(has[i])
        o = W - (rng.random(len(idx)) * ONSET_SPAN_YEARS * 365.25).astype(np.int64)
        dx = o + rng.exponential(DIAGNOSIS_DELAY_DAYS, len(idx)).astype(np.int64)
        is_pre = rng.random(len(idx)) < p.pre_treat_p
        after = ~is_pre & (rng.random(len(idx)) < p.treat_p)
        start = np.where(is_pre, o - rng.integers(60, 721, len(idx)),
                         np.where(after, dx + rng.integers(0, 90, len(idx)), NEVER))
        # progress (days at full speed) needed to reach stage 2 and 3; slowed from an after-diagnosis start
        need = np.cumsum(rng.exponential(1.0, (2, len(idx))) * np.array(p.sojourn_years)[:, None] * 365.25, axis=0)
        need = need / speed[idx]
        s = np.where(after, start, NEVER)
        lag = s - o                                              # full-speed days before the treatment
        day = np.where(need <= lag, o + need, s + (need - lag) / p.response)
        day = np.minimum(day, NEVER).astype(np.int64)
        onset[i, idx], diag[i, idx], treat[i, idx], pre[i, idx] = o, dx, start, is_pre
        stage2[i, idx], stage3[i, idx] = day[0], day[1]
    state = LatentState(onset=onset, stage2=stage2, stage3=stage3, diagnosis=diag, treatment=treat)
    return Latent(female=female, birth=birth, age_end=age_end, frail=np.exp(log_frail), pred=pred, state=state,
                  has=has, pre=pre)


def _spread_between(rng, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Repeat row j counts[j] times at uniform days in [lo[j], hi[j]); the first at lo[j] (the visit that
    opens the stage). Returns (row, day)."""
    row = np.repeat(np.arange(len(counts)), counts)
    day = lo[row] + (rng.random(len(row)) * (hi[row] - lo[row])).astype(np.int64)
    first = np.cumsum(counts) - counts
    day[first[counts > 0]] = lo[counts > 0]
    return row, day


@functools.lru_cache(maxsize=16)
def intercept_for(win: Window, prevalence: float) -> float:
    """The risk intercept that gives `prevalence` on a fixed calibration cohort of the same window."""
    lat = simulate_latent(np.random.default_rng(CALIBRATION_SEED), CALIBRATION_PATIENTS, win)
    z = trajectory_logit(lat.age_at(lat.pred, win.days), lat.state, lat.pred)
    return calibrate_intercept(z, prevalence)


@functools.lru_cache(maxsize=4)
def _compiled(t: CodeTables):
    return compile_processes(t)


def simulate_trajectory_chunk(rng: np.random.Generator, n: int, win: Window, t: CodeTables,
                              novel: NovelController, prevalence: float) -> Chunk:
    """Simulate n trajectory patients over the trajectory tables `t` (code_space.trajectory_tables)."""
    W = win.days
    processes, background, bg_drugs = _compiled(t)
    lat = simulate_latent(rng, n, win)
    acc = _Acc()
    los_log = np.zeros(n)
    st = lat.state

    def visits(pat, day, cs: CompiledStage):
        """Process or background visits: a diagnosis of the stage (sometimes two), E/M code, labs."""
        none = np.zeros(len(pat), bool)
        acc.add(pat, day, cs.icd.sample(rng, none))
        two = rng.random(len(pat)) < SECOND_CODE_P
        acc.add(pat[two], day[two], cs.icd.sample(rng, none[two]))
        office = rng.random(len(pat)) < OFFICE_VISIT_P
        acc.add(pat[office], day[office], t.office.sample(rng, none[office]))
        for gid, p in cs.cpt:
            hit = rng.random(len(pat)) < p
            acc.add(pat[hit], day[hit], gid)

    def fills(pat, start, draw, per_year=4.0):
        """A drug drawn per patient from `draw`, filled from `start` (clipped to the window) to its end."""
        start = np.maximum(start, 0)
        ok = start < W
        pat, start = pat[ok], start[ok]
        gid = draw.sample(rng, np.zeros(len(pat), bool))
        row, day = _spread(rng, 1 + rng.poisson(per_year * (W - start) / 365.25), start, W)
        acc.add(pat[row], day, gid[row])

    for i, cp in enumerate(processes):
        idx = np.flatnonzero(lat.has[i])
        o, dx = st.onset[i, idx], st.diagnosis[i, idx]
        coded = np.where(dx < 0, rng.integers(0, 120, len(idx)), dx)  # prevalent cases: seen in 4 months
        bounds = [o, st.stage2[i, idx], st.stage3[i, idx], np.full(len(idx), NEVER)]
        final = np.zeros(len(idx))
        for k, cs in enumerate(cp.stages):
            lo = np.maximum(bounds[k], coded)
            hi = np.minimum(bounds[k + 1], W)
            on = np.flatnonzero(lo < hi)
            final[on] = k
            pat, lo, hi = idx[on], lo[on], hi[on]
            span = (hi - lo) / 365.25
            row, day = _spread_between(rng, 1 + rng.poisson(cs.stage.visits * lat.frail[pat] * span), lo, hi)
            visits(pat[row], day, cs)
            if cs.drugs is not None:
                go = rng.random(len(pat)) < cs.stage.drug_p
                fills(pat[go], lo[go] + rng.integers(0, 30, int(go.sum())), cs.drugs)
            kind = 1 if cp.process.name == "heart_failure" else 0
            if k > 0 and cs.stage.entry_stay_p:                   # the progression itself is an admission
                seen = (bounds[k][on] >= coded[on]) & (rng.random(len(pat)) < cs.stage.entry_stay_p)
                acc.stay(pat[seen], lo[seen], cs.icd.sample(rng, np.zeros(int(seen.sum()), bool)), kind)
            if cs.stage.hosp:
                ns = rng.poisson(cs.stage.hosp * lat.frail[pat] * span)
                srow = np.repeat(np.arange(len(pat)), ns)
                adm = lo[srow] + (rng.random(len(srow)) * (hi[srow] - lo[srow])).astype(np.int64)
                acc.stay(pat[srow], adm, cs.icd.sample(rng, np.zeros(len(srow), bool)), kind)
        los_log[idx] += 0.1 * final
        treated = st.treatment[i, idx] < W
        fills(idx[treated], st.treatment[i, idx][treated], cp.treatment)

    # Background: minor illness, injuries, check-ups; more for the frail and the multimorbid.
    nn = rng.poisson(m.NOISE_VISITS_PER_YEAR * lat.frail * (1 + 0.15 * lat.has.sum(axis=0)) * W / 365.25)
    pat = np.repeat(np.arange(n), nn)
    day = rng.integers(0, W, len(pat))
    visits(pat, day, background)
    for gid, p in bg_drugs:
        hit = rng.random(len(pat)) < p
        acc.add(pat[hit], day[hit], gid)
    age_dec = (lat.age_end - 60.0) / 10.0
    nb = rng.poisson(m.HOSPITAL_BASE_RATE * lat.frail * np.exp(0.3 * age_dec) * W / 365.25)
    pat = np.repeat(np.arange(n), nb)
    acc.stay(pat, rng.integers(0, W, len(pat)), t.hospital_reasons.sample(rng, np.zeros(len(pat), bool)), 0)

    stays = stays_before_outcome(acc, lat.pred, win.horizon)
    z = trajectory_logit(lat.age_at(lat.pred, W), st, lat.pred, intercept_for(win, prevalence))
    return finish_chunk(rng, n, win, t, novel, acc, stays, task.sigmoid(z), lat.female, lat.birth, lat.pred,
                        age_dec, los_log, lat.has)

