"""Claims simulation, vectorised over a chunk of patients: demographics, disease modules, visits, drug
fills, procedures, hospital stays, the planted outcome and novel-code replacement, as flat numpy arrays.

Days are offsets from the window start (0 .. W-1); events never fall outside the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exmed_bert.synthetic import modules as m
from exmed_bert.synthetic import task
from exmed_bert.synthetic.tables import CodeTables

CHUNK_SIZE = 1000           # patients per chunk; part of the output's definition (one RNG per chunk)
FEMALE_SHARE = 0.52
OFFICE_VISIT_P = 0.85       # P(an outpatient visit also bills an E/M code)
FRAILTY_SIGMA = 0.6         # lognormal spread of per-patient utilisation: the long tail of history lengths
LOS_CAP_DAYS = 90


@dataclass(frozen=True)
class Window:
    start: int              # first day of the history window, days since 1970-01-01
    days: int               # W: window length in days
    horizon: int            # outcome horizon after the prediction date, days
    min_history: int        # earliest prediction date, days after the window start


@dataclass
class Chunk:
    """One simulated chunk. Events are sorted by (patient, kind, day); bounds[3*i + k] .. bounds[3*i + k + 1]
    are patient i's events of kind k (0 diagnoses, 1 prescriptions, 2 procedures)."""

    female: np.ndarray      # (n,) bool
    birth: np.ndarray       # (n,) days since 1970-01-01
    pred: np.ndarray        # (n,) prediction date, window offset
    prob: np.ndarray        # (n,) true outcome risk
    label: np.ndarray       # (n,) int 0/1
    day: np.ndarray         # (E,) event day (window offset)
    gid: np.ndarray         # (E,) code id into CodeTables
    bounds: np.ndarray      # (3n+1,)
    adm: np.ndarray         # (S,) admission day, sorted by (patient, admission)
    dis: np.ndarray         # (S,) discharge day (may pass the window end)
    stay_bounds: np.ndarray  # (n+1,)
    has: np.ndarray         # (C, n) bool: condition present by the window end
    n_dxrx: int             # diagnosis + drug codes written
    n_novel: int            # of which not in the embedding vocabulary


class _Acc:
    """Collects (patient, day, gid) event arrays and (patient, admission, reason, kind) stays."""

    def __init__(self) -> None:
        self.ev: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.st: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, pat: np.ndarray, day: np.ndarray, gid) -> None:
        if len(pat):
            self.ev.append((pat, day, np.broadcast_to(np.asarray(gid, dtype=np.int64), pat.shape)))

    def stay(self, pat: np.ndarray, adm: np.ndarray, reason: np.ndarray, kind: int) -> None:
        if len(pat):
            self.st.append((pat, adm, reason, np.full(len(pat), kind, dtype=np.int8)))


def _spread(rng, counts: np.ndarray, lo: np.ndarray, hi: int):
    """Repeat row j counts[j] times, each at a uniform day in [lo[j], hi). Returns (row, day); the
    first event of every row sits at lo[j] (the visit or fill that starts the episode)."""
    row = np.repeat(np.arange(len(counts)), counts)
    base = lo[row]
    day = base + (rng.random(len(row)) * (hi - base)).astype(np.int64)
    first = np.cumsum(counts) - counts
    day[first[counts > 0]] = lo[counts > 0]
    return row, day


class NovelController:
    """Replaces emitted diagnosis/drug codes by novel siblings so the running novel rate meets the target.

    Codes already absent from the vocabulary count as novel; codes without a sibling cannot be
    replaced, so replaceable codes are swapped with a proportionally higher probability."""

    def __init__(self, target: float):
        self.target, self.total, self.novel = target, 0, 0

    def apply(self, rng, gid: np.ndarray, kind: np.ndarray, t: CodeTables) -> tuple[int, int]:
        dxrx = kind < 2
        natural = dxrx & ~t.in_vocab[gid]
        cand = dxrx & (t.replace[gid] >= 0)
        n_dxrx, n_cand = int(dxrx.sum()), int(cand.sum())
        want = self.target * (self.total + n_dxrx) - self.novel - int(natural.sum())
        p = min(max(want / n_cand, 0.0), 1.0) if n_cand else 0.0
        hit = cand & (rng.random(len(gid)) < p)
        gid[hit] = t.replace[gid[hit]]
        n_novel = int((dxrx & ~t.in_vocab[gid]).sum())
        self.total += n_dxrx
        self.novel += n_novel
        return n_dxrx, n_novel


ORDER_FLIP_P = 0.5          # temporal task: P(the treatment of an ordered pair started before its diagnosis)
METFORMIN = ("A10BA02",)
ANTICOAGULANTS = ("B01AF02",)


def _temporal_logit(n, pred, age_pred, first_day, order, treat_start, acute_pat, acute_day, sp, sa):
    """The temporal task's features, read off the history strictly before each prediction date."""
    ap = np.concatenate(acute_pat) if acute_pat else np.zeros(0, np.int64)
    ad = np.concatenate(acute_day) if acute_day else np.zeros(0, np.int64)
    before = ad < pred[ap]
    recent = before & (ad >= pred[ap] - task.RECENT_DAYS)
    recent_acute = np.bincount(ap[recent], minlength=n)
    old_acute = np.bincount(ap[before & ~recent], minlength=n)
    dm_day, af_day = first_day[order["type2_diabetes"]], first_day[order["atrial_fibrillation"]]
    never = np.iinfo(np.int64).max // 4
    started = {k: np.where(v < pred, v, never) for k, v in treat_start.items()}  # a drug after pred is unseen
    in_recent = (sa >= pred[sp] - task.RECENT_DAYS) & (sa < pred[sp])
    in_before = (sa >= pred[sp] - 365) & (sa < pred[sp] - task.RECENT_DAYS)
    return task.temporal_logit(age_pred, recent_acute, old_acute, dm_day < pred, started["type2_diabetes"],
                               dm_day, af_day < pred, started["atrial_fibrillation"], af_day,
                               np.bincount(sp[in_recent], minlength=n), np.bincount(sp[in_before], minlength=n))


def simulate_chunk(rng: np.random.Generator, n: int, win: Window, t: CodeTables,
                   novel: NovelController, task_kind: str = "hf") -> Chunk:
    """Simulate n patients. task_kind "hf" (the default planted task) or "temporal" (exmed_bert.synthetic.task);
    "hf" draws exactly the random numbers it always has, so its output does not depend on the other task.
    The trajectory task has its own simulation (exmed_bert.synthetic.trajectory)."""
    if task_kind not in ("hf", "temporal"):
        raise ValueError(f"simulate_chunk runs the hf and temporal tasks, not {task_kind!r}")
    temporal = task_kind == "temporal"
    W = win.days
    female = rng.random(n) < FEMALE_SHARE
    age_end = 18.0 + 77.0 * rng.beta(1.6, 1.8, n)                   # years at the window end
    birth = win.start + W - 1 - (age_end * 365.25).astype(np.int64)
    age_dec = (age_end - 60.0) / 10.0
    log_frail = rng.normal(-FRAILTY_SIGMA ** 2 / 2, FRAILTY_SIGMA, n)   # mean frailty 1
    frail = np.exp(log_frail)
    pred = rng.integers(win.min_history, W - win.horizon, n)        # outcome window ends inside W

    C = len(t.conditions)
    has = np.zeros((C, n), dtype=bool)
    first_day = np.full((C, n), W, dtype=np.int64)                 # first coded day (W = never)
    los_log = np.zeros(n)
    insulin_start = np.full(n, W, dtype=np.int64)
    insulin = t.gid("atc", "A10AE04")
    acc = _Acc()
    # temporal task: first day of the ordered pairs' treatments, and the acute risk episodes
    never = np.iinfo(np.int64).max // 4
    ordered = {"type2_diabetes": {t.gid("atc", c) for c in METFORMIN},
               "atrial_fibrillation": {t.gid("atc", c) for c in ANTICOAGULANTS}}
    treat_start = {name: np.full(n, never, dtype=np.int64) for name in ordered}
    acute_pat, acute_day = [], []

    def visits(pat, day, icd, severe):
        """Outpatient visits: one condition code each, plus an office E/M code most of the time."""
        acc.add(pat, day, icd.sample(rng, severe))
        office = rng.random(len(pat)) < OFFICE_VISIT_P
        acc.add(pat[office], day[office], t.office.sample(rng, severe[office]))

    for ci, cc in enumerate(t.conditions):
        c = cc.cond
        z = c.base + c.age * age_dec + c.female * female + 0.4 * log_frail
        for li, w in cc.links:
            z = z + w * has[li]
        if c.chronic:
            idx = np.flatnonzero(rng.random(n) < task.sigmoid(z))
            has[ci, idx] = True
            los_log[idx] += c.los
            # 2/3 of onsets precede the window (prevalent: first coded in the first 4 months)
            onset = (W * (1.0 - 3.0 * rng.random(len(idx)))).astype(np.int64)
            first = np.where(onset < 0, rng.integers(0, 120, len(idx)), np.minimum(onset, W - 1))
            first_day[ci, idx] = first
            sev = rng.random(len(idx)) < c.severe
            years = (W - first) / 365.25
            row, day = _spread(rng, 1 + rng.poisson(c.visits * frail[idx] * (1 + 0.5 * sev) * years), first, W)
            pat, vs = idx[row], sev[row]
            visits(pat, day, cc.icd, vs)
            for gid, p in cc.cpt:
                hit = rng.random(len(pat)) < p
                acc.add(pat[hit], day[hit], gid)
            for gid, pm, ps in cc.atc:
                is_ordered = temporal and gid in ordered.get(c.name, ())
                # temporal task: every patient with the diagnosis gets its treatment; only the order varies
                on = np.flatnonzero(rng.random(len(idx)) < (1.0 if is_ordered else np.where(sev, ps, pm)))
                start = first[on] + rng.integers(0, 30, len(on))
                on, start = on[start < W], start[start < W]
                span = W - start
                if is_ordered:
                    # order: some patients were on the drug before the diagnosis was coded; the number
                    # of fills keeps following the post-diagnosis span, so counts do not tell the order
                    early = np.maximum(first[on] - rng.integers(60, 721, len(on)), 0)
                    start = np.where(rng.random(len(on)) < ORDER_FLIP_P, early, start)
                    np.minimum.at(treat_start[c.name], idx[on], start)
                frow, fday = _spread(rng, 1 + rng.poisson(c.fills * span / 365.25), start, W)
                acc.add(idx[on][frow], fday, gid)
                if gid == insulin:
                    np.minimum.at(insulin_start, idx[on], start)
            if c.hosp:
                ns = rng.poisson(c.hosp * frail[idx] * (1 + sev) * years)
                srow = np.repeat(np.arange(len(idx)), ns)
                adm = first[srow] + (rng.random(len(srow)) * (W - first[srow])).astype(np.int64)
                acc.stay(idx[srow], adm, cc.icd.sample(rng, sev[srow]), 1 if c.name == "heart_failure" else 0)
        else:
            ne = rng.poisson(np.exp(z) * frail * W / 365.25)
            has[ci] = ne > 0                                        # at least one episode
            pat = np.repeat(np.arange(n), ne)
            day = rng.integers(0, W, len(pat))
            if c.name in task.ACUTE_RISK_CONDITIONS:
                acute_pat.append(pat)
                acute_day.append(day)
            visits(pat, day, cc.icd, np.zeros(len(pat), dtype=bool))
            for gid, p, _ in cc.atc:
                hit = rng.random(len(pat)) < p
                acc.add(pat[hit], day[hit], gid)
            for gid, p in cc.cpt:
                hit = rng.random(len(pat)) < p
                acc.add(pat[hit], day[hit], gid)
            if c.hosp:
                hit = rng.random(len(pat)) < c.hosp * np.exp(0.3 * age_dec[pat])
                acc.stay(pat[hit], day[hit], cc.icd.sample(rng, np.zeros(int(hit.sum()), bool)), 0)

    # Background: acute visits and symptoms, more for the frail and multimorbid.
    n_cond = has.sum(axis=0)
    nn = rng.poisson(m.NOISE_VISITS_PER_YEAR * frail * (1 + 0.15 * n_cond) * W / 365.25)
    pat = np.repeat(np.arange(n), nn)
    day = rng.integers(0, W, len(pat))
    visits(pat, day, t.noise_icd, np.zeros(len(pat), dtype=bool))
    for gid, p in t.noise_atc + t.noise_cpt:
        hit = rng.random(len(pat)) < p
        acc.add(pat[hit], day[hit], gid)
    nb = rng.poisson(m.HOSPITAL_BASE_RATE * frail * np.exp(0.3 * age_dec) * W / 365.25)
    pat = np.repeat(np.arange(n), nb)
    acc.stay(pat, rng.integers(0, W, len(pat)), t.hospital_reasons.sample(rng, np.zeros(len(pat), bool)), 0)

    sp, sa, sr, sk = stays_before_outcome(acc, pred, win.horizon)

    # The planted task: risk from the history strictly before the prediction date.
    names = task.CONDITION_FEATURES
    order = {cc.cond.name: i for i, cc in enumerate(t.conditions)}
    coded = {name: first_day[order[name]] < pred for name in names}
    prior = (sa >= pred[sp] - 365) & (sa < pred[sp])
    stays_prior = np.bincount(sp[prior], minlength=n)
    age_pred = age_end - (W - 1 - pred) / 365.25
    if temporal:
        prob = task.sigmoid(_temporal_logit(n, pred, age_pred, first_day, order, treat_start, acute_pat,
                                            acute_day, sp, sa))
    else:
        prob = task.sigmoid(task.risk_logit(age_pred, ~female, coded, insulin_start < pred, stays_prior))
    return finish_chunk(rng, n, win, t, novel, acc, (sp, sa, sr, sk), prob, female, birth, pred, age_dec,
                        los_log, has)


def stays_before_outcome(acc: _Acc, pred: np.ndarray, horizon: int):
    """The stays so far as (patient, admission, reason, kind) arrays; heart-failure admissions (kind 1)
    inside the outcome window are dropped: they are the label's alone."""
    sp, sa, sr, sk = (np.concatenate(x) for x in zip(*acc.st)) if acc.st else (np.zeros(0, np.int64),) * 4
    in_outcome = (sa > pred[sp]) & (sa <= pred[sp] + horizon)
    keep = ~((sk == 1) & in_outcome)
    return sp[keep], sa[keep], sr[keep], sk[keep]


def finish_chunk(rng, n: int, win: Window, t: CodeTables, novel: NovelController, acc: _Acc, stays, prob,
                 female, birth, pred, age_dec, los_log, has) -> Chunk:
    """Draw the labels from `prob` and write the outcome admission, lengths of stay, the stays' codes, then
    sort, de-duplicate and make codes novel: the part every task shares."""
    W = win.days
    sp, sa, sr, sk = stays
    label = (rng.random(n) < prob).astype(np.int64)
    op = np.flatnonzero(label)
    oadm = pred[op] + rng.integers(1, win.horizon + 1, len(op))
    sp, sa = np.concatenate([sp, op]), np.concatenate([sa, oadm])
    sr = np.concatenate([sr, t.outcome_icd.sample(rng, np.ones(len(op), bool))])
    sk = np.concatenate([sk, np.full(len(op), 2, np.int8)])

    # Length of stay: older and sicker patients stay longer; gamma-Poisson gives the long right tail.
    mean = m.MEAN_LOS_DAYS * np.exp(0.15 * age_dec[sp] + los_log[sp]) * np.where(sk == 2, 1.6, 1.0)
    los = 1 + rng.poisson(rng.gamma(2.0, (mean - 1.0) / 2.0))
    dis = sa + np.minimum(los, LOS_CAP_DAYS)
    acc.add(sp, sa, sr)
    acc.add(sp, sa, t.admission)
    inside = dis < W
    acc.add(sp[inside], dis[inside], t.discharge)
    out = sk == 2
    for gid in t.outcome_cpt:
        acc.add(sp[out], sa[out], gid)
    fu = out & inside
    acc.add(sp[fu], dis[fu], t.outcome_atc)
    fday = dis[fu] + rng.integers(7, 22, int(fu.sum()))
    ok = fday < W
    acc.add(sp[fu][ok], fday[ok], t.outcome_icd.sample(rng, np.ones(int(ok.sum()), bool)))

    # Sort by (patient, kind, day, code) and drop exact duplicates in one pass.
    empty = (np.zeros(0, np.int64),) * 3                           # a tiny chunk may have no events
    ep, ed, eg = (np.concatenate(x) for x in zip(*acc.ev)) if acc.ev else empty
    G = len(t.codes)
    key = np.sort(((ep * 3 + t.kind[eg]) * W + ed) * G + eg)
    key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    gid, rest = key % G, key // G
    day, pk = rest % W, rest // W
    n_dxrx, n_novel = novel.apply(rng, gid, pk % 3, t)
    bounds = np.searchsorted(pk, np.arange(3 * n + 1))
    so = np.lexsort((sa, sp))
    return Chunk(female=female, birth=birth, pred=pred, prob=prob, label=label, day=day, gid=gid,
                 bounds=bounds, adm=sa[so], dis=dis[so], stay_bounds=np.searchsorted(sp[so], np.arange(n + 1)),
                 has=has, n_dxrx=n_dxrx, n_novel=n_novel)
