"""The trajectory task: its fixed risk on hand-built latent states, calibration, determinism, the width of
its code space, and hf/temporal files unchanged by it."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from exmed_bert import codes
from exmed_bert.cli.generate import main
from exmed_bert.synthetic import processes as pr
from exmed_bert.synthetic import task
from exmed_bert.synthetic import trajectory_risk as tr
from exmed_bert.synthetic.cohort import Params, generate
from exmed_bert.synthetic.trajectory_risk import NEVER, LatentState

PRED = 1000                                   # the prediction date (window offset) of the hand-built patients
P = len(pr.PROCESSES)
IDX = pr.process_index()


def logit(age=65.0, **processes):
    """trajectory_logit (without intercept) for one patient; processes: name -> dict of latent days
    (onset, stage2, stage3, diagnosis, treatment), the rest never happens."""
    days = {k: np.full((P, 1), NEVER, dtype=np.int64) for k in ("onset", "stage2", "stage3", "diagnosis", "treatment")}
    for name, d in processes.items():
        for k, v in d.items():
            days[k][IDX[name], 0] = v
    return float(tr.trajectory_logit(np.array([age]), LatentState(**days), np.array([PRED]))[0])


def test_progression_raises_the_risk_stage_by_stage():
    none = logit()
    s1 = logit(heart_failure=dict(onset=-2000, diagnosis=-1900))
    s2 = logit(heart_failure=dict(onset=-2000, diagnosis=-1900, stage2=-1000))
    s3 = logit(heart_failure=dict(onset=-2000, diagnosis=-1900, stage2=-1000, stage3=0))
    assert none < s1 < s2 < s3
    assert s1 - none == pytest.approx(tr.STAGE_WEIGHTS["heart_failure"][1])
    # a stage entered on or after the prediction date is not yet part of the state
    assert logit(heart_failure=dict(onset=-2000, diagnosis=-1900, stage2=PRED)) == pytest.approx(s1)


def test_recent_progression_and_new_onset_weigh_more():
    old = logit(ckd=dict(onset=-2000, diagnosis=-1900, stage2=PRED - 400))
    recent = logit(ckd=dict(onset=-2000, diagnosis=-1900, stage2=PRED - 60))
    assert recent - old == pytest.approx(tr.RECENT_PROGRESSION["ckd"])
    long_ago = logit(heart_failure=dict(onset=-2000, diagnosis=-1900))
    new = logit(heart_failure=dict(onset=PRED - 100, diagnosis=PRED - 50))
    assert new - long_ago == pytest.approx(tr.WEIGHTS["heart_failure_new_onset"])


def test_treatment_order_moves_the_risk():
    hf = dict(onset=0, diagnosis=100)
    untreated = logit(heart_failure=hf)
    after = logit(heart_failure={**hf, "treatment": 150})
    same_day = logit(heart_failure={**hf, "treatment": 100})
    before_onset = logit(heart_failure={**hf, "treatment": -300})     # a beta-blocker for another indication
    not_yet = logit(heart_failure={**hf, "treatment": PRED})           # started on the prediction date: unseen
    assert after == pytest.approx(untreated + tr.TREATED_AFTER_DIAGNOSIS["heart_failure"]) and after < untreated
    assert same_day == pytest.approx(after)
    assert before_onset == pytest.approx(untreated) and not_yet == pytest.approx(untreated)


def test_cardiorenal_interaction_and_age():
    hf, ckd2 = dict(onset=-500, diagnosis=-400), dict(onset=-2000, diagnosis=-1900, stage2=-1000)
    both = logit(heart_failure=hf, ckd=ckd2)
    assert both - logit(heart_failure=hf) - logit(ckd=ckd2) + logit() == pytest.approx(tr.WEIGHTS["cardiorenal"])
    assert logit(age=85.0) > logit(age=65.0) > logit(age=45.0)


def test_calibrate_intercept_hits_the_target():
    z = np.random.default_rng(0).normal(0, 1.5, 20000)
    for target in (0.03, 0.1, 0.3):
        b = tr.calibrate_intercept(z, target)
        assert np.mean(task.sigmoid(z + b)) == pytest.approx(target, abs=1e-4)


def _gen(tmp_path, n, seed=42, prevalence=None, name="t"):
    p = Params(num_patients=n, novel_prob=0.01, seed=seed, start_date="2020-01-01", end_date="2024-12-31",
               task_horizon_days=365, task="trajectory", task_prevalence=prevalence)
    out, task_csv = tmp_path / f"{name}.jsonl", tmp_path / f"{name}_task.csv"
    meta = generate(p, str(out), str(task_csv), progress=False)
    return out, task_csv, meta


def _bytes(out, task_csv):
    return [f.read_bytes() for f in (out, out.with_name(out.stem + ".metadata.json"), task_csv,
                                     task_csv.with_name(task_csv.stem + "_risk.csv"))]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _bytes(*_gen(tmp_path, 1200, name="a")[:2])           # two chunks
    b = _bytes(*_gen(tmp_path, 1200, name="b")[:2])
    c = _bytes(*_gen(tmp_path, 1200, seed=7, name="c")[:2])
    assert a == b
    assert a[0] != c[0] and a[2] != c[2] and a[3] != c[3]


@pytest.mark.parametrize("target", [0.10, 0.03])
def test_prevalence_is_calibrated(tmp_path, target):
    _, task_csv, meta = _gen(tmp_path, 6000, seed=3, prevalence=target)
    labels = [int(r["label"]) for r in csv.DictReader(open(task_csv, newline=""))]
    assert np.mean(labels) == pytest.approx(target, rel=0.2)
    assert meta["task"]["mean_true_risk"] == pytest.approx(target, rel=0.1)
    assert meta["parameters"]["task_prevalence"] == target
    assert meta["task"]["risk_function"]["calibrated_to_prevalence"] == target


def test_risk_file_and_oracle(tmp_path):
    out, task_csv, meta = _gen(tmp_path, 3000, seed=5)
    risk = [float(r["true_risk"]) for r in csv.DictReader(open(task_csv.with_name(task_csv.stem + "_risk.csv")))]
    labels = [int(r["label"]) for r in csv.DictReader(open(task_csv, newline=""))]
    assert len(risk) == len(labels) == 3000 and all(0 < r < 1 for r in risk)
    assert task.oracle_auroc(np.array(risk), np.array(labels)) == pytest.approx(meta["task"]["oracle_auroc"], abs=1e-6)
    assert meta["task"]["oracle_auroc"] > 0.7                  # the state carries the outcome
    assert meta["task"]["kind"] == "trajectory" and "process_prevalence" in meta


def _distinct(out):
    seen = {}
    for line in out.read_text().splitlines():
        p = json.loads(line)
        for kind, system in (("diagnoses", "icd10cm"), ("prescriptions", "atc"), ("procedures", "cpt")):
            for e in p[kind]:
                seen[(system, e["code"])] = seen.get((system, e["code"]), 0) + 1
    return seen


def test_code_space_is_wide_real_and_long_tailed(tmp_path):
    small = _distinct(_gen(tmp_path, 500, name="s")[0])
    out, _, meta = _gen(tmp_path, 3000, name="l")
    large = _distinct(out)
    assert meta["code_space"]["distinct_codes"] == len(large)
    # wide, and wider with more patients (the long tail keeps filling in): the hf task has about 340 codes
    assert len(large) >= 2500 and len(large) >= 1.5 * len(small)
    counts = np.sort(np.array(list(large.values())))[::-1]
    assert (counts < 10).mean() > 0.5                          # most codes are rare ...
    assert counts[:100].sum() / counts.sum() > 0.6             # ... while the top 100 carry most events
    for (system, code) in large:                               # every code is a real leaf of the shipped tables
        if system != "cpt":
            assert codes.is_leaf(code, system), (system, code)


PINNED = {  # sha256 over patients, metadata, task CSV and risk file of 300 patients, seed 11, before trajectory
    "hf": "f47cfba13b066a0e741835b206c3559b486b6755688941da6b35fb305ccb4f83",
    "temporal": "f9bb51c2073f5e2fd0f1cabf350e8b7344439da5b97bc60f4fda3b9607c237c9",
}


@pytest.mark.parametrize("kind", ["hf", "temporal"])
def test_hf_and_temporal_files_are_unchanged(tmp_path, kind):
    out, task_csv = tmp_path / "pin.jsonl", tmp_path / "pin_task.csv"
    generate(Params(300, 0.01, 11, "2020-01-01", "2024-12-31", 365, task=kind), str(out), str(task_csv),
             progress=False)
    h = hashlib.sha256()
    for part in _bytes(out, task_csv):
        h.update(part)
    assert h.hexdigest() == PINNED[kind]


def test_task_prevalence_refused_for_other_tasks_and_out_of_range(tmp_path, capsys):
    args = ["-n", "10", "--output", str(tmp_path / "p.json"), "--task-output", str(tmp_path / "t.csv")]
    assert main([*args, "--task", "hf", "--task-prevalence", "0.1"]) == 2
    assert "trajectory only" in capsys.readouterr().err
    assert main([*args, "--task", "trajectory", "--task-prevalence", "0.9"]) == 2
    assert main([*args, "--task", "trajectory", "--task-prevalence", "0.03"]) == 0
