"""The report's oracle: the true risk's AUROC on exactly the compared test patients (not the whole-cohort
figure in the generator's metadata), its CI and each model's paired gap, found from the runs' task CSV;
plainly "no oracle" without a risk file; a risk file from another cohort is an error.
"""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from exmed_bert.cli.compare import main
from exmed_bert.evaluation import metrics as M
from exmed_bert.evaluation.outputs import evaluate_and_write

N_COHORT, N_TEST, N_BOOT, SEED = 1000, 300, 200, 42


@pytest.fixture()
def cohort(tmp_path):
    """A whole cohort's true risks (risk file + metadata oracle), and two fake runs scored on a test split
    where the risk ranks much worse than over the whole cohort (the test patients have a narrow risk
    range), so the whole-cohort and test-split oracles differ by far more than their CI."""
    rng = np.random.default_rng(0)
    risk = np.where(np.arange(N_COHORT) < N_TEST, rng.uniform(0.05, 0.5, N_COHORT), rng.uniform(0.01, 0.99, N_COHORT))
    y = (rng.random(N_COHORT) < risk).astype(int)
    ids = [f"P{i:04d}" for i in range(N_COHORT)]
    task = tmp_path / "data" / "task.csv"
    task.parent.mkdir()
    task.write_text("patient_id,label,prediction_date\n" + "".join(f"{i},{l},2022-01-01\n" for i, l in zip(ids, y)))
    (tmp_path / "data" / "task_risk.csv").write_text(
        "patient_id,true_risk\n" + "".join(f"{i},{r!r}\n" for i, r in zip(ids, risk.tolist())))
    meta = tmp_path / "data" / "patients.json"
    meta.write_text(json.dumps({"patients": [], "metadata": {"task": {"oracle_auroc": round(roc_auc_score(y, risk), 6)}}}))

    t = np.arange(N_TEST)                                             # the test split
    good = risk[t] + rng.normal(0, 0.005, N_TEST)                     # nearly the true risk
    weak = risk[t] + rng.normal(0, 1.0, N_TEST)                       # far below it
    runs = []
    for name, p, order in (("ExMed-BERT", good, t), ("XGBoost", weak, rng.permutation(t))):
        folder = tmp_path / name
        evaluate_and_write(folder, name, test_ids=[ids[i] for i in order], y_test=y[order], p_test=p[order],
                           y_val=y[t], p_val=p, n_bootstrap=N_BOOT, seed=SEED, extra={"data": {"task_data": str(task)}})
        runs.append(str(folder))
    return {"runs": runs, "task": task, "meta": meta, "risk": risk, "y": y, "good": good, "weak": weak,
            "cohort_oracle": roc_auc_score(y, risk)}


def _report(tmp_path, runs, *extra):
    out = tmp_path / "report" / "report.md"
    rc = main(["--runs", *runs, "--output", str(out), "--n-bootstrap", str(N_BOOT), "--seed", str(SEED), *extra])
    return rc, out


def test_report_uses_the_test_split_oracle_with_paired_gaps(cohort, tmp_path):
    rc, out = _report(tmp_path, cohort["runs"], "--metadata", str(cohort["meta"]))
    assert rc == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    o = summary["oracle"]
    t = np.arange(N_TEST)
    y, risk = cohort["y"][t], cohort["risk"][t]
    expect = roc_auc_score(y, risk)
    assert o["n"] == N_TEST and o["risk_file"].endswith("task_risk.csv")          # found from the runs
    assert o["auroc"] == pytest.approx(expect) and summary["oracle_auroc"] == o["auroc"]
    assert o["ci_low"] < o["auroc"] < o["ci_high"]
    assert abs(cohort["cohort_oracle"] - expect) > 0.1 and not o["ci_low"] < cohort["cohort_oracle"] < o["ci_high"]
    # gaps are model - oracle, with the paired CI from the same resamples (the report's order = first run's)
    for name, p in (("ExMed-BERT", cohort["good"]), ("XGBoost", cohort["weak"])):
        g = o["gaps"][name]
        d = M.paired_auroc_delta(y, p, risk, n_bootstrap=N_BOOT, seed=SEED)
        assert g["gap"] == pytest.approx(roc_auc_score(y, p) - expect)
        assert (g["gap"], g["ci_low"], g["ci_high"]) == (d["delta_auroc"], d["ci_low"], d["ci_high"])
    assert o["gaps"]["ExMed-BERT"]["ci_low"] < 0 < o["gaps"]["ExMed-BERT"]["ci_high"]
    assert o["gaps"]["XGBoost"]["ci_high"] < 0
    text = out.read_text()
    assert f"**{expect:.3f}**" in text
    assert "ExMed-BERT is within sampling noise of the oracle" in text
    gap = -o["gaps"]["XGBoost"]["gap"]
    assert f"XGBoost is {gap:.3f} below the oracle" in text
    assert "context only" in text                      # the whole-cohort figure is not the reference


def test_explicit_risk_file_and_run_config_fallback(cohort, tmp_path):
    # without metrics.json's data.task_data, run_config.json's args.task_data is used
    for run in cohort["runs"]:
        m = json.loads((tmp_path / run / "metrics.json").read_text())
        del m["data"]
        (tmp_path / run / "metrics.json").write_text(json.dumps(m))
        (tmp_path / run / "run_config.json").write_text(json.dumps({"args": {"task_data": str(cohort["task"])}}))
    rc, out = _report(tmp_path, cohort["runs"])
    assert rc == 0 and json.loads(out.with_suffix(".json").read_text())["oracle"]["n"] == N_TEST
    moved = tmp_path / "elsewhere.csv"
    (cohort["task"].parent / "task_risk.csv").rename(moved)
    rc, out = _report(tmp_path, cohort["runs"], "--risk-file", str(moved))
    assert rc == 0 and json.loads(out.with_suffix(".json").read_text())["oracle"]["risk_file"] == str(moved)


def test_no_risk_file_says_no_oracle(cohort, tmp_path, capsys):
    (cohort["task"].parent / "task_risk.csv").unlink()
    rc, out = _report(tmp_path, cohort["runs"], "--metadata", str(cohort["meta"]))
    assert rc == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["oracle"] is None and summary["oracle_auroc"] is None
    text = out.read_text()
    assert "No oracle" in text and "task_risk.csv" in text
    assert f"{cohort['cohort_oracle']:.3f}" not in text and "gap" not in text.lower()   # no figure at all
    assert "No oracle" in capsys.readouterr().out


def test_risk_file_from_another_cohort_is_one_line_error(cohort, tmp_path, capsys):
    risk = cohort["task"].parent / "task_risk.csv"
    risk.write_text("\n".join(line for line in risk.read_text().splitlines() if not line.startswith("P0007")))
    rc, out = _report(tmp_path, cohort["runs"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "1 of the 300" in err and "P0007" in err
    assert not out.exists()


@pytest.mark.parametrize("body, needle", [
    ("patient_id,risk\nP0000,0.5\n", "header"),
    ("patient_id,true_risk\nP0000,1.5\n", "line 2"),
    ("patient_id,true_risk\nP0000,0.5\nP0000,0.4\n", "appears twice"),
])
def test_bad_risk_file_is_one_line_error(cohort, tmp_path, capsys, body, needle):
    bad = tmp_path / "bad_risk.csv"
    bad.write_text(body)
    rc, _ = _report(tmp_path, cohort["runs"], "--risk-file", str(bad))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err and str(bad) in err
    rc, _ = _report(tmp_path, cohort["runs"], "--risk-file", str(tmp_path / "absent.csv"))
    assert rc == 2 and "--risk-file" in capsys.readouterr().err


def test_oracle_on_rows_keyed_by_patient_and_time_uses_patient_resamples(tmp_path):
    """MEDS labels give a patient a row per prediction time; the risk file has one risk per patient. The
    oracle takes each row's patient's risk, and its gaps are the patient-clustered paired ΔAUROC."""
    rng = np.random.default_rng(3)
    n_pat = 150
    risk = rng.uniform(0.02, 0.98, n_pat)
    pats = [f"{100 + i}" for i in range(n_pat)]
    rows = [i for i in range(n_pat) for _ in range(1 + i % 3)]          # 1-3 rows per patient
    y = (rng.random(len(rows)) < risk[rows]).astype(int)
    times = np.arange(len(rows), dtype=np.int64) * 3_600_000_000        # distinct hours
    task = tmp_path / "task.csv"
    task.write_text("patient_id,label,prediction_date\n")
    (tmp_path / "task_risk.csv").write_text(
        "patient_id,true_risk\n" + "".join(f"{p},{r!r}\n" for p, r in zip(pats, risk.tolist())))
    p_model = risk[rows] + rng.normal(0, 0.2, len(rows))
    ids = [pats[i] for i in rows]
    folder = tmp_path / "m"
    evaluate_and_write(folder, "M", test_ids=ids, y_test=y, p_test=p_model, y_val=y, p_val=p_model,
                       n_bootstrap=N_BOOT, seed=SEED, prediction_times=times,
                       extra={"data": {"task_data": str(task), "label_column": "boolean_value"}})
    rc, out = _report(tmp_path, [str(folder)], "--risk-file", str(tmp_path / "task_risk.csv"))
    assert rc == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    o = summary["oracle"]
    assert (o["n"], o["n_patients"]) == (len(rows), n_pat)
    assert o["auroc"] == pytest.approx(roc_auc_score(y, risk[rows]), abs=1e-12)
    groups = M.patient_groups(ids)
    want = M.paired_auroc_delta(y, p_model, risk[rows], n_bootstrap=N_BOOT, seed=SEED, groups=groups)
    gap = o["gaps"]["M"]
    assert (gap["ci_low"], gap["ci_high"]) == pytest.approx((want["ci_low"], want["ci_high"]), abs=1e-12)
    plain = M.paired_auroc_delta(y, p_model, risk[rows], n_bootstrap=N_BOOT, seed=SEED)
    assert (gap["ci_low"], gap["ci_high"]) != pytest.approx((plain["ci_low"], plain["ci_high"]), abs=1e-9)
    assert f"Test split: {len(rows)} rows from {n_pat} patients" in out.read_text()
