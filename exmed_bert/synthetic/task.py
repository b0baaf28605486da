"""The planted task: heart-failure hospitalisation within the horizon after a per-patient prediction date.

The risk is a documented function of what a patient's history shows *before* the prediction date, and
the oracle AUROC (true risk vs drawn labels) is the ceiling any model can reach on the cohort.
"""

from __future__ import annotations

import numpy as np

# logit(risk) = INTERCEPT + sum(weight * feature). Features are read off the history strictly before
# the prediction date (see RISK_FEATURES in docs/SYNTHETIC_DATA_GUIDE.md). Interactions make the
# function non-additive, so trees and attention both have something to find.
INTERCEPT = -2.65
WEIGHTS = {
    "age_per_decade_from_65": 0.45,
    "male": 0.3,
    "type2_diabetes": 0.45,
    "hypertension": 0.4,
    "ckd": 0.6,
    "atrial_fibrillation": 0.7,
    "heart_failure": 1.4,
    "ischaemic_heart_disease": 0.6,
    "copd": 0.4,
    "obesity": 0.3,
    "insulin": 0.6,                       # any A10AE (long-acting insulin) fill: severe diabetes
    "diabetes_x_ckd": 0.5,
    "af_x_age75": 0.5,
    "stays_prior_year": 0.35,             # hospital admissions in the 365 days before, capped at 3
}
CONDITION_FEATURES = ("type2_diabetes", "hypertension", "ckd", "atrial_fibrillation", "heart_failure",
                      "ischaemic_heart_disease", "copd", "obesity")


def risk_logit(age: np.ndarray, male: np.ndarray, coded: dict[str, np.ndarray], insulin: np.ndarray,
               stays_prior_year: np.ndarray) -> np.ndarray:
    """Per-patient logit (B,). age: years at the prediction date; coded[name]: condition coded before
    it (bool, B); insulin: insulin filled before it; stays_prior_year: admissions in the year before."""
    w = WEIGHTS
    z = INTERCEPT + w["age_per_decade_from_65"] * (age - 65.0) / 10.0 + w["male"] * male
    for name in CONDITION_FEATURES:
        z = z + w[name] * coded[name]
    z = z + w["insulin"] * insulin
    z = z + w["diabetes_x_ckd"] * (coded["type2_diabetes"] & coded["ckd"])
    z = z + w["af_x_age75"] * (coded["atrial_fibrillation"] & (age >= 75))
    return z + w["stays_prior_year"] * np.minimum(stays_prior_year, 3)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def oracle_auroc(prob: np.ndarray, label: np.ndarray) -> float | None:
    """AUROC of the true probabilities against the drawn labels (None when only one class is present)."""
    label = np.asarray(label).astype(bool)
    n1 = int(label.sum())
    n0 = len(label) - n1
    if n1 == 0 or n0 == 0:
        return None
    # Mann-Whitney U with average ranks for ties (same value as sklearn's roc_auc_score, no import cost).
    _, inverse, counts = np.unique(prob, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0         # 1-based average rank of each value
    rank_sum = avg_rank[inverse][label].sum()
    return float((rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0))


# ---------------------------------------------------------------------------------------------------
# The temporal task (`--task temporal`): the same outcome, but a risk in which order and timing carry
# most of the signal, so that "has this code before the prediction date" is not enough.
#
# logit(risk) = TEMPORAL_INTERCEPT + sum(TEMPORAL_WEIGHTS[f] * feature f), with, all read off the
# history strictly before the prediction date:
#   recent_acute    acute episodes (pneumonia, urinary tract infection, cellulitis) in the 180 days
#                   before, capped at 2: weight 1.4 each;
#   old_acute       the same episodes longer ago, capped at 3: weight 0.2 each (recency: 7x);
#   diabetes        type 2 diabetes coded: +1.2 ...
#   diabetes_treated  ... cancelled (-1.2) when metformin was started on or after the diagnosis; the same
#                   drug started before the diagnosis (for prediabetes) does not protect (order);
#   af / af_treated atrial fibrillation coded: +1.2, cancelled (-1.2) by an anticoagulant started on or
#                   after the AF diagnosis; started before it, no protection (order);
#   stay_trend      admissions in the last 180 days minus those 180-365 days before, clipped to -1..2:
#                   weight 0.6 (a run of admissions, trajectory);
#   age_per_decade_from_65: 0.25.
# ---------------------------------------------------------------------------------------------------
TASKS = ("hf", "temporal", "trajectory")      # trajectory: exmed_bert.synthetic.trajectory_risk
RECENT_DAYS = 180
TEMPORAL_INTERCEPT = -3.2
TEMPORAL_WEIGHTS = {
    "age_per_decade_from_65": 0.25,
    "recent_acute": 2.5,
    "old_acute": 0.3,
    "diabetes": 2.5,
    "diabetes_treated": -2.5,
    "af": 2.5,
    "af_treated": -2.5,
    "stay_trend": 1.0,
}
ACUTE_RISK_CONDITIONS = ("pneumonia", "urinary_tract_infection", "cellulitis")


def temporal_logit(age: np.ndarray, recent_acute: np.ndarray, old_acute: np.ndarray, diabetes: np.ndarray,
                   metformin_start: np.ndarray, diabetes_day: np.ndarray, af: np.ndarray,
                   anticoag_start: np.ndarray, af_day: np.ndarray, stays_recent: np.ndarray,
                   stays_before: np.ndarray) -> np.ndarray:
    """Per-patient logit (B,) of the temporal task.

    age: years at the prediction date; recent_acute / old_acute: counts of acute risk episodes in the
    180 days before it / earlier; diabetes, af: coded before it (bool); *_day: the day it was first
    coded; metformin_start / anticoag_start: first day of the drug before the prediction date (a large
    value when never); stays_recent / stays_before: admissions in the last 180 days / 180-365 days before.
    """
    w = TEMPORAL_WEIGHTS
    z = TEMPORAL_INTERCEPT + w["age_per_decade_from_65"] * (age - 65.0) / 10.0
    z = z + w["recent_acute"] * np.minimum(recent_acute, 2) + w["old_acute"] * np.minimum(old_acute, 3)
    never = np.iinfo(np.int64).max // 4
    dm_after = diabetes & (metformin_start < never) & (metformin_start >= diabetes_day)
    af_after = af & (anticoag_start < never) & (anticoag_start >= af_day)
    z = z + w["diabetes"] * diabetes + w["diabetes_treated"] * dm_after
    z = z + w["af"] * af + w["af_treated"] * af_after
    return z + w["stay_trend"] * np.clip(stays_recent - stays_before, -1, 2)
