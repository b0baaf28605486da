"""The trajectory task's risk: a FIXED function of each patient's latent clinical state at the prediction
date (stage of each disease process, recent progression, time since onset, treatment order), and the
calibration of its intercept to a target prevalence. Documented in docs/SYNTHETIC_DATA_GUIDE.md; it was
fixed before any model was tuned on it and must not change to favour one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exmed_bert.synthetic import processes as pr

NEVER = np.iinfo(np.int64).max // 4        # a day that never comes (no onset, no progression, no drug)
RECENT_DAYS = 180                          # "recent progression": entered the current stage this recently
NEW_ONSET_DAYS = 365                       # heart failure's vulnerable first year
DEFAULT_PREVALENCE = 0.10

# logit(risk) = intercept (calibrated to the target prevalence) + the terms below. Stage weights are
# indexed by stage 0 (no onset yet) .. 3.
STAGE_WEIGHTS = {
    "heart_failure": (0.0, 1.0, 1.8, 2.6),
    "ckd": (0.0, 0.3, 0.9, 1.5),
    "coronary": (0.0, 0.3, 0.7, 1.1),
    "diabetes": (0.0, 0.2, 0.5, 0.9),
    "copd": (0.0, 0.1, 0.4, 0.7),
}
RECENT_PROGRESSION = {"heart_failure": 1.0, "ckd": 0.5, "coronary": 0.8, "copd": 0.4}
TREATED_AFTER_DIAGNOSIS = {"heart_failure": -0.9, "diabetes": -0.6}
WEIGHTS = {
    "age_per_decade_from_65": 0.3,
    "heart_failure_new_onset": 0.6,        # onset in the 365 days before the prediction date
    "cardiorenal": 0.6,                    # heart failure (any stage) AND CKD stage >= 2
    "diabetes_years_since_onset": 0.05,    # per year, up to 10 years
}


@dataclass
class LatentState:
    """Each process's latent days (P, B), window offsets (negative: before the window; NEVER: not yet)."""

    onset: np.ndarray            # the process starts (stage 1)
    stage2: np.ndarray           # progression into stage 2
    stage3: np.ndarray           # progression into stage 3
    diagnosis: np.ndarray        # the latent diagnosis (the first code, when inside the window)
    treatment: np.ndarray        # first day of the disease-modifying drug (before the onset: another indication)


def state_at(s: LatentState, day: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(stage (P, B) int 0..3, days in the current stage (P, B), years since onset (P, B), treated after the
    diagnosis (P, B) bool), everything strictly before `day` (B,)."""
    before = lambda d: d < day[None, :]                     # noqa: E731
    stage = before(s.onset).astype(np.int64) + before(s.stage2) + before(s.stage3)
    entered = np.where(stage == 3, s.stage3, np.where(stage == 2, s.stage2, s.onset))
    days_in = np.where(stage > 0, day[None, :] - entered, 0)
    years = np.where(stage > 0, (day[None, :] - s.onset) / 365.25, 0.0)
    treated = before(s.treatment) & (s.treatment >= s.diagnosis) & (stage > 0)
    return stage, days_in, years, treated


def trajectory_logit(age: np.ndarray, s: LatentState, day: np.ndarray, intercept: float = 0.0) -> np.ndarray:
    """Per-patient logit (B,). age: years at `day` (the prediction date); s: the latent state."""
    idx = pr.process_index()
    stage, days_in, years, treated = state_at(s, day)
    z = intercept + WEIGHTS["age_per_decade_from_65"] * (age - 65.0) / 10.0
    for name, w in STAGE_WEIGHTS.items():
        z = z + np.asarray(w)[stage[idx[name]]]
    for name, w in RECENT_PROGRESSION.items():
        i = idx[name]
        z = z + w * ((stage[i] >= 2) & (days_in[i] <= RECENT_DAYS))
    for name, w in TREATED_AFTER_DIAGNOSIS.items():
        z = z + w * treated[idx[name]]
    hf, ckd, dm = idx["heart_failure"], idx["ckd"], idx["diabetes"]
    z = z + WEIGHTS["heart_failure_new_onset"] * ((stage[hf] > 0) & (years[hf] * 365.25 <= NEW_ONSET_DAYS))
    z = z + WEIGHTS["cardiorenal"] * ((stage[hf] > 0) & (stage[ckd] >= 2))
    return z + WEIGHTS["diabetes_years_since_onset"] * np.minimum(years[dm], 10.0)


def calibrate_intercept(logit_without_intercept: np.ndarray, prevalence: float) -> float:
    """The intercept b with mean(sigmoid(z + b)) = prevalence (bisection; the mean rises with b)."""
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit_without_intercept + mid)))) < prevalence:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 6)
