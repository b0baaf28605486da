"""The temporal planted task: its risk function on hand-built histories, and the generated cohort."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from exmed_bert.synthetic import task

NEVER = np.iinfo(np.int64).max // 4


def logit(**kw):
    """temporal_logit for one patient aged 65 with nothing in the history, overridden by kw."""
    base = dict(age=65.0, recent_acute=0, old_acute=0, diabetes=False, metformin_start=NEVER, diabetes_day=NEVER,
                af=False, anticoag_start=NEVER, af_day=NEVER, stays_recent=0, stays_before=0)
    base.update(kw)
    return float(task.temporal_logit(**{k: np.atleast_1d(np.asarray(v)) for k, v in base.items()})[0])


def test_order_flips_the_risk():
    none = logit()
    untreated = logit(diabetes=True, diabetes_day=100)
    treated_after = logit(diabetes=True, diabetes_day=100, metformin_start=120)
    drug_before = logit(diabetes=True, diabetes_day=100, metformin_start=40)
    assert untreated == pytest.approx(none + task.TEMPORAL_WEIGHTS["diabetes"])
    assert treated_after == pytest.approx(none)                 # treatment after the diagnosis cancels it
    assert drug_before == pytest.approx(untreated)              # the same drug before it does not
    # the same for atrial fibrillation and its anticoagulant; the same day counts as "after"
    assert logit(af=True, af_day=300, anticoag_start=300) == pytest.approx(none)
    assert logit(af=True, af_day=300, anticoag_start=299) == pytest.approx(none + task.TEMPORAL_WEIGHTS["af"])


def test_recency_and_trajectory_weights():
    none = logit()
    recent, old = logit(recent_acute=1) - none, logit(old_acute=1) - none
    assert recent >= 5 * old > 0                                # a recent episode counts several times more
    assert logit(recent_acute=5) == pytest.approx(logit(recent_acute=2))  # capped at 2
    rising = logit(stays_recent=2, stays_before=0) - none
    falling = logit(stays_recent=0, stays_before=2) - none
    assert rising == pytest.approx(2 * task.TEMPORAL_WEIGHTS["stay_trend"]) and falling < 0 < rising


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from exmed_bert.synthetic.cohort import Params, generate

    d = tmp_path_factory.mktemp("temporal")
    p = Params(num_patients=3000, novel_prob=0.01, seed=5, start_date="2020-01-01", end_date="2024-12-31",
               task_horizon_days=365, task="temporal")
    meta = generate(p, str(d / "p.jsonl"), str(d / "t.csv"), progress=False)
    return d, meta, p


def test_generation_is_deterministic_and_writes_the_risk_file(cohort, tmp_path):
    from exmed_bert.synthetic.cohort import generate

    d, meta, p = cohort
    assert meta["task"]["kind"] == "temporal" and meta["task"]["risk_function"]["weights"] == task.TEMPORAL_WEIGHTS
    generate(p, str(tmp_path / "p.jsonl"), str(tmp_path / "t.csv"), progress=False)
    for name in ("p.jsonl", "t.csv", "t_risk.csv"):
        assert (tmp_path / name).read_bytes() == (d / name).read_bytes(), name
    with open(d / "t_risk.csv", newline="") as f:
        risk = {r["patient_id"]: float(r["true_risk"]) for r in csv.DictReader(f)}
    with open(d / "t.csv", newline="") as f:
        labels = {r["patient_id"]: int(r["label"]) for r in csv.DictReader(f)}
    assert risk.keys() == labels.keys() and all(0.0 < v < 1.0 for v in risk.values())
    ids = sorted(labels)
    oracle = task.oracle_auroc(np.array([risk[i] for i in ids]), np.array([labels[i] for i in ids]))
    assert oracle == pytest.approx(meta["task"]["oracle_auroc"], abs=1e-6)
    assert oracle >= 0.78                       # the signal is strong enough for the benchmark's 0.75 floor


def test_the_temporal_task_differs_from_hf_only_in_its_risk(cohort, tmp_path):
    """Same seed: the hf cohort's labels come from another function, so they differ; the order pairs of
    the temporal task are planted (every diabetic gets metformin, before or after the diagnosis)."""
    from exmed_bert.synthetic.cohort import Params, generate

    d, _, p = cohort
    hf = Params(**{**p.__dict__, "task": "hf"})
    generate(hf, str(tmp_path / "p.jsonl"), str(tmp_path / "t.csv"), progress=False)
    assert (tmp_path / "t.csv").read_bytes() != (d / "t.csv").read_bytes()


def test_both_orders_of_a_treatment_and_its_diagnosis_are_planted(cohort):
    import json

    d, _, _ = cohort
    before = after = 0
    for line in (d / "p.jsonl").read_text().splitlines():
        p = json.loads(line)
        # the diabetes module codes the diagnosis as E11.x or Z79.84 / Z79.4 (long-term drug use)
        dx = [e["date"] for e in p["diagnoses"] if e["code"].startswith(("E11", "Z79.84", "Z79.4"))]
        rx = [e["date"] for e in p["prescriptions"] if e["code"] == "A10BA02"]
        if dx and rx:
            before += min(rx) < min(dx)
            after += min(rx) >= min(dx)
    share = before / (before + after)
    # ORDER_FLIP_P = 0.5 (less the patients coded on the window's first day); +-0.15 is over 6 standard
    # errors of a share at n > 400 (sqrt(0.25 / 400) = 0.025)
    assert before + after > 400 and 0.35 < share < 0.65, (before, after)
