"""Metrics with bootstrap CIs: hand-computed values, sklearn agreement, CIs, shuffle, paired deltas,
gaps to a reference score, full-precision predictions."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, f1_score, roc_auc_score

from exmed_bert.evaluation import metrics as M


def test_hand_computed_binary_case():
    # positives score 0.9, 0.4; negatives 0.8, 0.3, 0.1. Pairs pos>neg: (0.9 beats all 3) + (0.4 beats 2) = 5/6
    y = np.array([1, 0, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.4, 0.3, 0.1])
    out = M.binary_metrics(y, p, threshold=0.5, n_bootstrap=200, seed=0)["metrics"]
    assert out["auroc"]["value"] == pytest.approx(5 / 6)
    # AP: recall steps at ranks 1 (P=1/1) and 3 (P=2/3) -> (1 + 2/3) / 2
    assert out["auprc"]["value"] == pytest.approx((1 + 2 / 3) / 2)
    # at 0.5: predicted positive = {0.9, 0.8}: tp=1 fp=1 fn=1
    assert out["precision"]["value"] == pytest.approx(0.5)
    assert out["recall"]["value"] == pytest.approx(0.5)
    assert out["f1"]["value"] == pytest.approx(0.5)
    assert out["brier"]["value"] == pytest.approx(np.mean((p - y) ** 2))
    # ECE, 10 bins: each patient in its own bin -> mean |y - p|
    assert out["ece"]["value"] == pytest.approx(np.mean(np.abs(y - p)))


def test_ties_count_half():
    y = np.array([1, 0])
    p = np.array([0.5, 0.5])
    assert M.weighted_auroc(y, p, np.ones((1, 2)))[0] == pytest.approx(0.5)


def test_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = np.round(np.clip(0.25 * y + 0.75 * rng.random(500), 0, 1), 2)  # many tied scores
    one = np.ones((1, 500))
    assert M.weighted_auroc(y, p, one)[0] == pytest.approx(roc_auc_score(y, p))
    assert M.weighted_auprc(y, p, one)[0] == pytest.approx(average_precision_score(y, p))
    assert M.weighted_threshold_metrics(y, p, one, 0.6)["f1"][0] == pytest.approx(f1_score(y, p >= 0.6))
    assert M.weighted_brier(y, p, one)[0] == pytest.approx(brier_score_loss(y, p))
    point = M.binary_metrics(y, p, 0.6, n_bootstrap=0)["metrics"]  # the reported values are scikit-learn's
    assert point["auroc"]["value"] == roc_auc_score(y, p) and point["f1"]["value"] == f1_score(y, p >= 0.6)
    assert point["auroc"]["ci_low"] is None  # no resamples, no interval


def test_bootstrap_weights_equal_resampling():
    # a weight row must give the same AUROC as explicitly resampling those patients
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, 60), rng.random(60)
    W = next(M.bootstrap_weights(60, 5, seed=3))
    assert W.shape == (5, 60) and (W.sum(axis=1) == 60).all()
    for row in W:
        idx = np.repeat(np.arange(60), row.astype(int))
        assert M.weighted_auroc(y, p, row[None])[0] == pytest.approx(roc_auc_score(y[idx], p[idx]))


def test_cis_contain_point_estimate_and_are_seeded():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
    a = M.binary_metrics(y, p, M.choose_threshold(y, p), n_bootstrap=300, seed=7)
    b = M.binary_metrics(y, p, M.choose_threshold(y, p), n_bootstrap=300, seed=7)
    assert a == b
    assert a["n"] == 300 and a["prevalence"] == pytest.approx(y.mean())
    for name, m in a["metrics"].items():
        assert m["ci_low"] <= m["value"] <= m["ci_high"], name
    for name in ("auroc", "auprc", "brier", "ece", "f1"):  # recall may sit at exactly 1.0
        assert a["metrics"][name]["ci_low"] < a["metrics"][name]["ci_high"], name


def test_label_shuffle_drops_auroc_to_chance():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 2000)
    p = np.clip(0.4 * y + 0.6 * rng.random(2000), 0, 1)
    real = M.binary_metrics(y, p, 0.5, n_bootstrap=200)["metrics"]["auroc"]
    shuffled = M.binary_metrics(rng.permutation(y), p, 0.5, n_bootstrap=200)["metrics"]["auroc"]
    assert real["value"] > 0.85
    # Under shuffled labels the AUROC's SE is sqrt((n1 + n0 + 1) / (12 n1 n0)) (Mann-Whitney null), about
    # 0.013 here: 4 SE leaves a chance of ~6e-5 of failing for a correct implementation.
    n1 = int(y.sum())
    se = np.sqrt((len(y) + 1) / (12 * n1 * (len(y) - n1)))
    assert abs(shuffled["value"] - 0.5) < 4 * se


def test_bootstrap_ci_covers_chance_under_shuffled_labels():
    """A 95% CI misses the true AUROC (0.5 under shuffled labels) 5% of the time, so one shuffle cannot
    test coverage without a fudge. Over 100 shuffles the misses are ~Binomial(100, 0.05): P(misses > 12)
    is 0.0015 (0.005 at the 5.8% miss rate this percentile bootstrap shows with B=200 over 1,000 shuffles),
    while a CI covering only 80% fails with probability 0.97 (P(misses <= 12 | 0.2) = 0.025)."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.4 * y + 0.6 * rng.random(500), 0, 1)
    misses = 0
    for k in range(100):
        a = M.binary_metrics(rng.permutation(y), p, 0.5, n_bootstrap=200, seed=k)["metrics"]["auroc"]
        misses += not (a["ci_low"] < 0.5 < a["ci_high"])
    assert misses <= 12


def test_choose_threshold_maximises_f1():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.8, 0.65])
    t = M.choose_threshold(y, p)
    best = max(f1_score(y, p >= c) for c in p)
    assert f1_score(y, p >= t) == pytest.approx(best)
    assert M.choose_threshold(np.zeros(4), np.ones(4) * 0.3) == 0.5  # no positives: default cut


def test_paired_delta_sign_and_ci():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 600)
    good = np.clip(0.5 * y + 0.5 * rng.random(600), 0, 1)
    bad = np.clip(0.1 * y + 0.9 * rng.random(600), 0, 1)
    d = M.paired_auroc_delta(y, good, bad, n_bootstrap=300, seed=0)
    assert d["delta_auroc"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, bad))
    assert 0 < d["ci_low"] <= d["delta_auroc"] <= d["ci_high"]
    assert d["p_value"] < 0.01
    same = M.paired_auroc_delta(y, good, good, n_bootstrap=100)
    assert same["delta_auroc"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0


def test_gaps_to_reference_use_the_paired_resamples():
    """The oracle's CI and each model's gap (model - reference) come from the same resamples as
    paired_auroc_delta: the gap equals it exactly, and the reference's CI equals its own bootstrap."""
    rng = np.random.default_rng(8)
    risk = rng.uniform(0.02, 0.6, 400)
    y = (rng.random(400) < risk).astype(int)
    close = risk + rng.normal(0, 0.02, 400)           # a model almost as good as the true risk
    weak = risk + rng.normal(0, 0.4, 400)             # clearly worse
    out = M.auroc_gaps_to_reference(y, risk, [close, weak], n_bootstrap=300, seed=3)
    ref = out["reference"]
    assert ref["value"] == pytest.approx(roc_auc_score(y, risk))
    boot = np.concatenate([M.weighted_auroc(y, risk, W) for W in M.bootstrap_weights(400, 300, 3)])
    assert (ref["ci_low"], ref["ci_high"]) == tuple(np.quantile(boot, [0.025, 0.975]))
    for p, m in zip((close, weak), out["models"]):
        d = M.paired_auroc_delta(y, p, risk, n_bootstrap=300, seed=3)
        assert m["gap"] == {"value": d["delta_auroc"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                            "p_value": d["p_value"]}
        assert m["auroc"]["value"] == pytest.approx(roc_auc_score(y, p))
    assert out["models"][0]["gap"]["ci_low"] < 0 < out["models"][0]["gap"]["ci_high"]   # within noise
    assert out["models"][1]["gap"]["ci_high"] < 0                                       # below the oracle


def test_predictions_round_trip_at_full_precision(tmp_path):
    """predictions.csv holds the exact float64s, so the report recomputes the run's own AUROC exactly,
    even where 6-decimal rounding would tie distinct scores."""
    import csv

    from exmed_bert.evaluation.outputs import write_predictions

    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 300)
    p = 0.5 + rng.normal(0, 1e-7, 300) + 1e-7 * y      # distinct scores within 1e-6 of each other
    p[:3] = [1 / 3, 2.5e-20, np.nextafter(1.0, 0)]
    write_predictions(tmp_path / "predictions.csv", [f"P{i}" for i in range(300)], y, p)
    with open(tmp_path / "predictions.csv", newline="") as f:
        back = np.array([float(r["probability"]) for r in csv.DictReader(f)])
    assert np.array_equal(back, p)
    assert M.weighted_auroc(y, back, np.ones((1, 300)))[0] == M.weighted_auroc(y, p, np.ones((1, 300)))[0]
    assert len(np.unique(np.round(p, 6))) < 10 < len(np.unique(back))   # rounding would have tied them


def test_single_class_test_set_gives_none_not_crash():
    out = M.binary_metrics(np.zeros(10), np.linspace(0, 1, 10), 0.5, n_bootstrap=50)
    assert out["metrics"]["auroc"]["value"] is None
    assert out["metrics"]["brier"]["value"] is not None


def test_multiclass_macro_matches_sklearn():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 400)
    P = rng.dirichlet([1, 1, 1], 400)
    P[np.arange(400), y] += 0.5
    P /= P.sum(axis=1, keepdims=True)
    out = M.multiclass_metrics(y, P, n_bootstrap=100, seed=0)
    assert out["metrics"]["macro_auroc"]["value"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr"))
    assert out["metrics"]["macro_f1"]["value"] == pytest.approx(f1_score(y, P.argmax(1), average="macro"))
    assert out["class_counts"] == np.bincount(y).tolist()
    m = out["metrics"]["macro_auroc"]
    assert m["ci_low"] <= m["value"] <= m["ci_high"]


def test_pretraining_plos_metrics_include_auprc_and_prevalence():
    """F1 at 0.5 is 0 when every score is below 0.5, yet a perfect ranking shows in AUROC and AUPRC."""
    import math

    from exmed_bert.training.metrics import plos_metrics

    out = plos_metrics([0.1, 0.2, 0.3, 0.4], [0, 0, 0, 1])
    assert out == {"auroc": 1.0, "auprc": 1.0, "f1": 0.0, "prevalence": 0.25}
    one_class = plos_metrics([0.1, 0.9], [0, 0])
    assert math.isnan(one_class["auroc"]) and math.isnan(one_class["auprc"]) and one_class["prevalence"] == 0.0


def test_patients_with_several_rows_are_resampled_whole():
    """Each patient's row twice: the cluster bootstrap gives exactly the CIs of one row per patient (each
    resample weighs a patient's rows as it was drawn), while resampling rows would narrow them ~1/sqrt(2)."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    once = M.binary_metrics(y, p, 0.5, n_bootstrap=200, seed=5)
    ids = [f"{i:03d}" for i in range(200) for _ in (1, 2)]   # codes follow sorted ids: 000 is 0, ...
    groups = M.patient_groups(ids)
    twice = M.binary_metrics(np.repeat(y, 2), np.repeat(p, 2), 0.5, n_bootstrap=200, seed=5, groups=groups)
    rows = M.binary_metrics(np.repeat(y, 2), np.repeat(p, 2), 0.5, n_bootstrap=200, seed=5)
    for k in ("auroc", "auprc", "brier"):
        assert twice["metrics"][k] == pytest.approx(once["metrics"][k]), k
    width = lambda m: m["metrics"]["auroc"]["ci_high"] - m["metrics"]["auroc"]["ci_low"]  # noqa: E731
    assert width(rows) < 0.85 * width(twice)
    assert twice["bootstrap_unit"].startswith("patient") and twice["n_patients"] == 200
    assert "bootstrap_unit" not in once and M.patient_groups([str(i) for i in range(5)]) is None
    assert M.patient_groups(["a@b", "a@c", "a@b"]).tolist() == [0, 1, 0]   # an id is taken whole
    d1 = M.paired_auroc_delta(y, p, 1 - p, n_bootstrap=100, seed=1)
    d2 = M.paired_auroc_delta(np.repeat(y, 2), np.repeat(p, 2), np.repeat(1 - p, 2), n_bootstrap=100, seed=1,
                              groups=groups)
    assert (d1["ci_low"], d1["ci_high"]) == pytest.approx((d2["ci_low"], d2["ci_high"]))
