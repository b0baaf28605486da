"""Metrics with 95% bootstrap CIs, shared by fine-tuning, RF, XGBoost, the report and pretraining's PLOS head.

Point estimates come from scikit-learn. The bootstrap scores every resample at once: each metric is also
written against patient *weights* (how often each test patient was drawn), so one vectorised numpy pass
over a (B, n) weight matrix replaces B scikit-learn calls (tests hold the two equal).

When a patient has several rows (MEDS labels: one per prediction time), `groups` makes it a cluster
bootstrap: patients are drawn, each with all of its rows, so rows of one patient are not counted as
independent evidence.
"""

from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
from sklearn.metrics import (average_precision_score, brier_score_loss, f1_score, precision_score, recall_score,
                             roc_auc_score)

BINARY_METRICS = ("auroc", "auprc", "f1", "precision", "recall", "brier", "ece")
MULTICLASS_METRICS = ("macro_auroc", "macro_f1", "accuracy", "brier")
ECE_BINS = 10
# Keep one bootstrap chunk's (B, n) float64 matrices to ~40 MB whatever the test-set size.
_CHUNK_CELLS = 5_000_000


# ---------------------------------------------------------------------------------------------
# weighted binary metrics over rows of W (B, n)


def _score_groups(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order patients by descending score; return (order, start index of each run of tied scores)."""
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
    return order, starts


def _weighted_curves(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tied-score group, descending: weighted positives and negatives, each (B, G)."""
    order, starts = _score_groups(p)
    Ws, ys = W[:, order], y[order].astype(np.float64)
    pos = np.add.reduceat(Ws * ys, starts, axis=1)
    neg = np.add.reduceat(Ws * (1.0 - ys), starts, axis=1)
    return pos, neg


def weighted_auroc(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """AUROC (Mann-Whitney, ties count 1/2) for each weight row; NaN where a class is absent. (B,)"""
    pos, neg = _weighted_curves(y, p, W)
    # Groups are in descending score, so negatives *below* group g are those after it.
    neg_after = neg.sum(axis=1, keepdims=True) - np.cumsum(neg, axis=1)
    P, N = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_after + 0.5 * neg)).sum(axis=1) / (P * N)


def weighted_auprc(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average precision as sklearn defines it: sum over thresholds of (ΔRecall × Precision). (B,)"""
    pos, neg = _weighted_curves(y, p, W)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    P = pos.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return (pos * precision).sum(axis=1) / P


def weighted_threshold_metrics(y: np.ndarray, p: np.ndarray, W: np.ndarray, threshold: float) -> dict:
    """F1, precision, recall at `threshold` (predict positive when p >= threshold), each (B,)."""
    pred = (p >= threshold).astype(np.float64)
    yf = y.astype(np.float64)
    tp = W @ (yf * pred)
    fp = W @ ((1 - yf) * pred)
    fn = W @ (yf * (1 - pred))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return {"f1": f1, "precision": precision, "recall": recall}


def weighted_brier(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    return (W @ (p - y) ** 2) / W.sum(axis=1)


def weighted_ece(y: np.ndarray, p: np.ndarray, W: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Expected calibration error over equal-width probability bins: Σ_b |Σ_{i∈b} w_i (y_i - p_i)| / Σ w."""
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)  # (n,)
    onehot = np.zeros((len(p), n_bins))
    onehot[np.arange(len(p)), bins] = 1.0
    gap = W @ ((y - p)[:, None] * onehot)  # (B, n_bins)
    return np.abs(gap).sum(axis=1) / W.sum(axis=1)


def _binary_all(y: np.ndarray, p: np.ndarray, W: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    return {"auroc": weighted_auroc(y, p, W), "auprc": weighted_auprc(y, p, W),
            **weighted_threshold_metrics(y, p, W, threshold),
            "brier": weighted_brier(y, p, W), "ece": weighted_ece(y, p, W)}


# ---------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_weights(n: int, n_boot: int, seed: int, groups: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Yield chunks of resample weights (b, n): row r counts how often each patient was drawn.

    `groups` (n,) ints 0..g-1, the patient of each row: g patients are drawn, and each row weighs as
    often as its patient was (a cluster bootstrap); without it every row is a patient. With one row
    per group the weights are those of the plain bootstrap over g rows."""
    rng = np.random.default_rng(seed)
    g = n if groups is None else _n_groups(groups)
    chunk = max(1, min(n_boot, _CHUNK_CELLS // max(n, g, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, g, size=(b, g))
        flat = idx + (np.arange(b) * g)[:, None]
        W = np.bincount(flat.ravel(), minlength=b * g).reshape(b, g).astype(np.float64)
        yield W if groups is None else W[:, groups]
        done += b


def _n_groups(groups: np.ndarray) -> int:
    return int(groups.max()) + 1 if len(groups) else 0


def patient_groups(patient_ids) -> np.ndarray | None:
    """`groups` for bootstrap_weights from each row's patient id, or None when every row is a different
    patient (the plain bootstrap)."""
    patients = [str(p) for p in patient_ids]
    if len(set(patients)) == len(patients):
        return None
    return np.unique(np.array(patients, dtype=object), return_inverse=True)[1].astype(np.int64)


def _interval(samples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    s = samples[np.isfinite(samples)]
    if len(s) == 0:
        return None, None
    a = (1 - level) / 2
    lo, hi = np.quantile(s, [a, 1 - a])
    return float(lo), float(hi)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def choose_threshold(y_val: np.ndarray, p_val: np.ndarray) -> float:
    """The probability cut that maximises F1 on the validation split (0.5 if val has no positives)."""
    y_val, p_val = np.asarray(y_val), np.asarray(p_val, dtype=np.float64)
    if len(y_val) == 0 or y_val.sum() == 0:
        return 0.5
    order, starts = _score_groups(p_val)
    pos, neg = _weighted_curves(y_val, p_val, np.ones((1, len(p_val))))
    tp, fp = np.cumsum(pos[0]), np.cumsum(neg[0])
    f1 = 2 * tp / (tp + fp + y_val.sum())
    best = int(np.argmax(f1))
    return float(p_val[order][starts[best]])


def _point_binary(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Each binary metric by scikit-learn; NaN where undefined (AUROC without both classes, AUPRC and recall
    without positives, F1 with neither positives nor positive predictions, Brier and ECE for scores that are
    not probabilities)."""
    if not len(y):
        return dict.fromkeys(BINARY_METRICS, np.nan)
    positives = y.sum()
    pred = p >= threshold
    probabilities = bool(p.min() >= 0.0 and p.max() <= 1.0)
    return {"auroc": roc_auc_score(y, p) if 0 < positives < len(y) else np.nan,
            "auprc": average_precision_score(y, p) if positives else np.nan,
            "f1": f1_score(y, pred, pos_label=1, zero_division=np.nan),
            "precision": precision_score(y, pred, pos_label=1, zero_division=0.0),
            "recall": recall_score(y, pred, pos_label=1, zero_division=np.nan),
            "brier": brier_score_loss(y, p, pos_label=1) if probabilities else np.nan,
            # scikit-learn has no ECE
            "ece": weighted_ece(y, p, np.ones((1, len(y))))[0] if probabilities else np.nan}


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_bootstrap: int = 1000,
                   seed: int = 42, level: float = 0.95, groups: np.ndarray | None = None) -> dict:
    """Point estimates (scikit-learn) and bootstrap CIs of every binary metric, plus n and prevalence.

    y: (n,) 0/1 labels; p: (n,) probability (or any score) of class 1; threshold: the F1 cut (chosen on
    val for test metrics). `n_bootstrap=0` gives the point estimates alone, with no CI. `groups`: the
    patient of each row (`patient_groups`) when some have several: a cluster bootstrap.
    """
    y = np.asarray(y).astype(np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be 1-D of equal length")
    n = len(y)
    point = _point_binary(y, p, threshold)
    samples: dict[str, list[np.ndarray]] = {k: [] for k in BINARY_METRICS}
    if n > 0 and n_bootstrap > 0:
        for W in bootstrap_weights(n, n_bootstrap, seed, groups):
            for k, v in _binary_all(y, p, W, threshold).items():
                samples[k].append(v)
    metrics = {}
    for k in BINARY_METRICS:
        lo, hi = (_interval(np.concatenate(samples[k]), level) if samples[k] and np.isfinite(point[k])
                  else (None, None))
        metrics[k] = {"value": _finite(point[k]), "ci_low": lo, "ci_high": hi}
    return {"task": "binary", "n": n, "n_positive": int(y.sum()),
            "prevalence": float(y.mean()) if n else None, "threshold": float(threshold),
            "n_bootstrap": n_bootstrap, "bootstrap_seed": seed, "ci_level": level, **_unit(groups),
            "metrics": metrics}


def _unit(groups: np.ndarray | None) -> dict:
    """What the bootstrap drew, for a metrics dict: said only when rows were drawn by patient."""
    if groups is None:
        return {}
    return {"bootstrap_unit": "patient (all of its rows)", "n_patients": _n_groups(groups)}


def paired_auroc_delta(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, n_bootstrap: int = 1000,
                       seed: int = 42, level: float = 0.95, groups: np.ndarray | None = None) -> dict:
    """AUROC(a) - AUROC(b) on the same patients, with a paired bootstrap CI (same resample for both).

    `p_value` is the two-sided bootstrap share of resamples on the other side of zero.
    """
    y = np.asarray(y).astype(np.float64)
    p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
    one = np.ones((1, len(y)))
    delta = float(weighted_auroc(y, p_a, one)[0] - weighted_auroc(y, p_b, one)[0])
    d = np.concatenate([weighted_auroc(y, p_a, W) - weighted_auroc(y, p_b, W)
                        for W in bootstrap_weights(len(y), n_bootstrap, seed, groups)])
    return {"delta_auroc": _finite(delta), **_delta_interval(d, level), "n": len(y), "n_bootstrap": n_bootstrap,
            **_unit(groups)}


def _delta_interval(d: np.ndarray, level: float) -> dict:
    """CI and two-sided bootstrap p-value (share of resamples on the other side of zero) of a paired
    difference, from its per-resample values d (B,); resamples missing a class (NaN) are dropped."""
    d = d[np.isfinite(d)]
    lo, hi = _interval(d, level)
    p_value = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()))) if len(d) else None
    return {"ci_low": lo, "ci_high": hi, "p_value": p_value}


def auroc_gaps_to_reference(y: np.ndarray, p_ref: np.ndarray, p_models: list[np.ndarray],
                            n_bootstrap: int = 1000, seed: int = 42, level: float = 0.95,
                            groups: np.ndarray | None = None) -> dict:
    """AUROC of a reference score (the generator's true risk: the oracle) and each model's gap to it.

    y: (n,) 0/1 labels; p_ref: (n,) reference scores; p_models: M arrays (n,) of P(class 1), all on the
    same patients in the same order. Every figure comes from the same resamples as paired_auroc_delta
    (bootstrap_weights(n, n_bootstrap, seed, groups)), so each gap (model - reference) is paired, and its CI
    and p-value equal paired_auroc_delta(y, p_model, p_ref, groups=groups). `groups`: the patient of each row
    when some have several (MEDS labels): patients are drawn with all their rows.
    Returns {"reference": {value, ci_low, ci_high}, "models": [{"auroc": {...}, "gap": {...}}] * M,
    "n", "n_bootstrap"}.
    """
    y = np.asarray(y).astype(np.float64)
    P = np.stack([np.asarray(p, dtype=np.float64) for p in (p_ref, *p_models)])  # (M+1, n)
    n = len(y)
    point = np.array([weighted_auroc(y, p, np.ones((1, n)))[0] for p in P])  # (M+1,)
    S = np.concatenate([np.stack([weighted_auroc(y, p, W) for p in P], axis=1)
                        for W in bootstrap_weights(n, n_bootstrap, seed, groups)]) if n else np.zeros((0, len(P)))

    def summary(k: int) -> dict:  # point estimate and CI of one score's AUROC, (B,) samples in S[:, k]
        lo, hi = _interval(S[:, k], level)
        return {"value": _finite(point[k]), "ci_low": lo, "ci_high": hi}

    models = [{"auroc": summary(k),
               "gap": {"value": _finite(point[k] - point[0]), **_delta_interval(S[:, k] - S[:, 0], level)}}
              for k in range(1, len(P))]
    return {"reference": summary(0), "models": models, "n": n, "n_bootstrap": n_bootstrap, **_unit(groups)}


# ---------------------------------------------------------------------------------------------
# multi-class


def _multiclass_all(y: np.ndarray, P: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """Macro one-vs-rest AUROC, macro F1 of the argmax, accuracy and multi-class Brier, each (B,)."""
    k = P.shape[1]
    pred = P.argmax(axis=1)
    aurocs, f1s = [], []
    for c in range(k):
        yc = (y == c).astype(np.float64)
        aurocs.append(weighted_auroc(yc, P[:, c], W))
        f1s.append(weighted_threshold_metrics(yc, (pred == c).astype(np.float64), W, 0.5)["f1"])
    onehot = np.eye(k)[y]
    with np.errstate(invalid="ignore"):
        return {"macro_auroc": np.nanmean(np.stack(aurocs), axis=0) if k else np.nan,
                "macro_f1": np.nanmean(np.nan_to_num(np.stack(f1s), nan=0.0), axis=0),
                "accuracy": (W @ (pred == y).astype(np.float64)) / W.sum(axis=1),
                "brier": (W @ ((P - onehot) ** 2).sum(axis=1)) / W.sum(axis=1)}


def multiclass_metrics(y: np.ndarray, P: np.ndarray, n_bootstrap: int = 1000, seed: int = 42,
                       level: float = 0.95, groups: np.ndarray | None = None) -> dict:
    """y: (n,) class ids; P: (n, K) class probabilities. Macro metrics with bootstrap CIs."""
    y = np.asarray(y).astype(np.int64)
    P = np.asarray(P, dtype=np.float64)
    n = len(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean over resamples missing a class
        point = {k: v[0] for k, v in _multiclass_all(y, P, np.ones((1, n))).items()}
        samples = {k: [] for k in MULTICLASS_METRICS}
        for W in bootstrap_weights(n, n_bootstrap, seed, groups) if n else []:
            for k, v in _multiclass_all(y, P, W).items():
                samples[k].append(v)
    metrics = {k: {"value": _finite(point[k]),
                   **dict(zip(("ci_low", "ci_high"),
                              _interval(np.concatenate(samples[k]), level) if samples[k] else (None, None)))}
               for k in MULTICLASS_METRICS}
    counts = np.bincount(y, minlength=P.shape[1]) if n else np.zeros(P.shape[1], int)
    return {"task": "multiclass", "num_labels": int(P.shape[1]), "n": n,
            "class_counts": counts.tolist(), "prevalence": (counts / max(n, 1)).tolist(),
            "n_bootstrap": n_bootstrap, "bootstrap_seed": seed, "ci_level": level, **_unit(groups),
            "metrics": metrics}


def headline_metric(name: str, y: np.ndarray, P: np.ndarray, threshold: float = 0.5) -> float:
    """One point metric for model selection on val (f1 | auroc | auprc), binary or multi-class."""
    y = np.asarray(y).astype(np.int64)
    P = np.asarray(P, dtype=np.float64)
    one = np.ones((1, len(y)))
    if P.ndim == 2 and P.shape[1] > 2:
        m = _multiclass_all(y, P, one)
        return float({"auroc": m["macro_auroc"], "f1": m["macro_f1"]}.get(name, m["macro_auroc"])[0])
    p = P[:, 1] if P.ndim == 2 else P
    yf = y.astype(np.float64)
    if name == "auroc":
        return float(weighted_auroc(yf, p, one)[0])
    if name == "auprc":
        return float(weighted_auprc(yf, p, one)[0])
    if name == "f1":
        return float(weighted_threshold_metrics(yf, p, one, threshold)["f1"][0])
    raise ValueError(f"unknown metric {name!r}")
