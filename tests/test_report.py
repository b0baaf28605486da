"""Comparison report: paired deltas on joined predictions, the oracle, the verdict, mismatched test sets."""

import json

import numpy as np
import pytest

from exmed_bert.evaluation.outputs import evaluate_and_write


def fake_run(folder, name, y, p, ids=None):
    ids = ids or [f"P{i}" for i in range(len(y))]
    evaluate_and_write(folder, name, test_ids=ids, y_test=y, p_test=p, y_val=y, p_val=p, n_bootstrap=50)
    return folder


@pytest.fixture()
def runs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.clip(0.5 * y + 0.5 * rng.random(400), 0, 1)
    weak = np.clip(0.15 * y + 0.85 * rng.random(400), 0, 1)
    order = rng.permutation(400)  # the same patients in another row order must still join
    ids = [f"P{i}" for i in range(400)]
    return {"bert": fake_run(tmp_path / "ft", "ExMed-BERT", y, weak),
            "xgb": fake_run(tmp_path / "xgb", "XGBoost", y[order], good[order], [ids[i] for i in order]),
            "y": y, "good": good, "weak": weak}


def test_report_says_who_wins(runs, tmp_path):
    from sklearn.metrics import roc_auc_score

    from exmed_bert.cli.compare import main

    meta = tmp_path / "patients.json"
    meta.write_text(json.dumps({"patients": [], "metadata": {"task": {"oracle_auroc": 0.91}}}))
    out = tmp_path / "report" / "report.md"
    assert main(["--runs", str(runs["bert"]), str(runs["xgb"]), "--metadata", str(meta), "--output", str(out),
                 "--n-bootstrap", "200"]) == 0
    text = out.read_text()
    assert "ExMed-BERT loses to XGBoost" in text
    # these runs record no task CSV, so there is no risk file: no oracle, and not the whole-cohort figure
    assert "No oracle" in text and "0.910" not in text
    summary = json.loads(out.with_suffix(".json").read_text())
    d = summary["paired_delta_auroc"][0]
    expect = roc_auc_score(runs["y"], runs["weak"]) - roc_auc_score(runs["y"], runs["good"])
    assert d["delta_auroc"] == pytest.approx(expect)
    assert d["ci_low"] <= d["delta_auroc"] <= d["ci_high"] < 0
    assert (out.parent / "roc_all.png").is_file() and (out.parent / "calibration_all.png").is_file()


def test_different_test_sets_are_an_error(runs, tmp_path, capsys):
    from exmed_bert.cli.compare import main

    other = fake_run(tmp_path / "rf", "Random Forest", runs["y"][:300], runs["good"][:300])
    rc = main(["--runs", f"{runs['bert']},{other}", "--output", str(tmp_path / "r.md"), "--metadata", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and "different test patients" in err
    assert not (tmp_path / "r.md").exists()


def test_missing_run_folder_is_an_error(tmp_path, capsys):
    from exmed_bert.cli.compare import main

    assert main(["--runs", str(tmp_path / "nothing"), "--output", str(tmp_path / "r.md")]) == 2
    assert "metrics.json: not found" in capsys.readouterr().err


def test_render_handles_a_one_class_test_set():
    from exmed_bert.evaluation.report import render, verdict

    lines = verdict([], [{"a": "A", "b": "B", "delta_auroc": None, "ci_low": None, "ci_high": None,
                          "p_value": None}], oracle=0.8)
    assert lines == ["No AUROC could be computed: the test split has a single class. Use more patients."]
    text = render({"n_test": 5, "prevalence": 0.0, "n_bootstrap": 10, "oracle_auroc": None, "verdict": lines, "paired_delta_auroc": [
        {"a": "A", "b": "B", "delta_auroc": None, "ci_low": None, "ci_high": None, "p_value": None}]}, [])
    assert "n/a (one-class test set)" in text


def test_a_test_split_too_small_gets_no_verdict(tmp_path):
    """One positive test row gives zero-width CIs; the report says the split is too small instead of
    declaring a winner."""
    from exmed_bert.cli.compare import main

    y = np.array([1] + [0] * 30)
    a = fake_run(tmp_path / "a", "Random Forest", y, np.linspace(1, 0, 31))
    b = fake_run(tmp_path / "b", "XGBoost", y, np.linspace(0, 1, 31))
    out = tmp_path / "r" / "report.md"
    assert main(["--runs", str(a), str(b), "--output", str(out), "--n-bootstrap", "50"]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert len(summary["verdict"]) == 1 and summary["verdict"][0].startswith("No verdict: the test split holds "
                                                                             "1 positive and 30 negative rows")
    assert "beats" not in out.read_text() and "loses to" not in out.read_text()


def test_an_auroc_far_below_half_is_not_called_near_chance(tmp_path):
    from exmed_bert.evaluation.report import load_run, verdict

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    inverted = load_run(fake_run(tmp_path / "inv", "Inverted", y, 1.0 - y * 0.9 - 0.05 * rng.random(200)))
    near = load_run(fake_run(tmp_path / "near", "Noise", y, rng.random(200)))
    lines = verdict([inverted, near], [], None, y)
    inv = [s for s in lines if "Inverted" in s and "Warning" in s]
    assert len(inv) == 1 and "worse than chance" in inv[0] and "near chance" not in inv[0]
    assert 0.45 <= near.metrics["metrics"]["auroc"]["value"] < 0.55
    assert any("Noise is near chance" in s for s in lines)
