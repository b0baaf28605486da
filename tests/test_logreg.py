"""Logistic regression, the linear baseline: train-logreg.py end to end, its coefficients.json giving back
the run's own probabilities, its settings, the report and the pipeline taking its run like RF's."""

import csv
import json

import numpy as np
import pytest
from test_baselines import planted_rule_auroc, synthetic_splits, write_claims_fixture

from exmed_bert.baselines.args import LogRegArgs, RFArgs
from exmed_bert.baselines.features import featurize
from exmed_bert.baselines.runner import run_baseline
from exmed_bert.data.dataset import UNKNOWN_BIRTH

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"icd10cm:X{i:02d}" for i in range(5, 40)]


@pytest.fixture(scope="module")
def claims(tmp_path_factory):
    # as test_baselines' end-to-end fixture: about 44 test patients, SIGNAL in 95% of positives, 5% of negatives
    return write_claims_fixture(tmp_path_factory.mktemp("claims"), n=400, signal_rates=(0.95, 0.05))


def test_train_logreg_learns_the_planted_code(claims, tmp_path):
    from exmed_bert.cli.baselines import main_logreg

    out = tmp_path / "logreg"
    assert main_logreg(["--data-dir", str(claims["data"]), "--task-data", str(claims["task"]),
                        "--output-dir", str(out), "--n-bootstrap", "50", "--C", "0.5"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["model"] == "Logistic regression" and doc["estimator"] == "logreg"
    assert doc["params"] == {"C": 0.5, "max_iter": 1000}
    # as for RF and XGBoost (test_baselines.test_cli_end_to_end): within 0.08 of the planted rule, which
    # scores 0.85 or more; a model blind to the code scores about 0.5
    rule = planted_rule_auroc(claims, out / "predictions.csv")
    assert rule >= 0.85 and doc["metrics"]["auroc"]["value"] >= rule - 0.08, (doc["metrics"]["auroc"], rule)
    top = json.loads((out / "feature_importances.json").read_text())
    assert top["estimator"] == "logreg" and top["top"][0]["feature"] == "icd10cm:E11.9"   # the planted code
    assert json.loads((out / "run_config.json").read_text())["args"]["C"] == 0.5
    assert (out / "coefficients.json").is_file() and not list(out.glob("*.pkl")) + list(out.glob("*.joblib"))


def test_coefficients_json_gives_back_the_runs_probabilities(tmp_path):
    """Every number that turns a feature row into a probability is in coefficients.json, unknown ages
    included: recomputed from it alone, the test probabilities are those in predictions.csv."""
    splits = synthetic_splits(n=300, seed=2)
    rng = np.random.default_rng(0)
    for s in splits.values():   # a quarter of the patients without a birth date: imputed, with an indicator
        n = len(s["labels"])
        s["prediction_days"] = np.full(n, 18262)
        s["birth_days"] = np.where(rng.random(n) < 0.25, UNKNOWN_BIRTH, 18262 - rng.integers(20, 90, n) * 365)
    run_baseline(LogRegArgs(output_dir=str(tmp_path), n_bootstrap=20), splits, TOKENS)
    c = json.loads((tmp_path / "coefficients.json").read_text())
    assert c["format"] == "exmed-bert-logreg" and c["classes"] == [0, 1]
    V = len(TOKENS)
    assert c["indicator_features"] == [V]                      # only the age column had missing values
    X = featurize(splits["test"], V).toarray()                 # (N, V + 3), NaN where the age is unknown
    missing = np.isnan(X[:, c["indicator_features"]])
    X = np.where(np.isnan(X), np.asarray(c["impute_statistics"]), X)
    X = np.hstack([X, missing.astype(float)])
    X = np.sign(X) * np.log1p(np.abs(X)) / np.asarray(c["scale"])
    p = 1 / (1 + np.exp(-(X @ np.asarray(c["coef"])[0] + c["intercept"][0])))
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert [r["patient_id"] for r in rows] == list(splits["test"]["patient_ids"])
    np.testing.assert_allclose(p, [float(r["probability"]) for r in rows], rtol=1e-5)


def test_its_own_settings_and_their_errors(capsys):
    from exmed_bert.cli.baselines import main_logreg

    assert "n_estimators" not in LogRegArgs.__dataclass_fields__ and LogRegArgs().C == 1.0
    assert main_logreg(["--C", "0"]) == 2
    assert "--C must be positive, got 0.0" in capsys.readouterr().err
    assert main_logreg(["--n-estimators", "10"]) == 2    # a tree setting is no flag of the linear model
    assert "unknown option --n-estimators" in capsys.readouterr().err


def test_the_report_takes_a_logreg_run_like_rfs(tmp_path):
    from exmed_bert.cli.compare import main

    splits = synthetic_splits(n=300, seed=4)
    run_baseline(RFArgs(output_dir=str(tmp_path / "rf"), n_estimators=30, n_jobs=1, n_bootstrap=20), splits, TOKENS)
    run_baseline(LogRegArgs(output_dir=str(tmp_path / "logreg"), n_bootstrap=20), splits, TOKENS)
    out = tmp_path / "report.md"
    assert main(["--runs", str(tmp_path / "rf"), str(tmp_path / "logreg"), "--output", str(out),
                 "--metadata", "none", "--n-bootstrap", "50"]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [(d["a"], d["b"]) for d in summary["paired_delta_auroc"]] == [("Random Forest", "Logistic regression")]
    assert "Logistic regression" in out.read_text()


def test_the_pipeline_runs_it_when_asked(tmp_path):
    """Not in the default stages (the report stays fine-tuned vs RF vs XGBoost); `stages: [..., logreg]`
    adds its stage, wired like RF's, with config.yaml's `logreg:` section, and its run to the report."""
    from exmed_bert import pipeline
    from exmed_bert.config import load_yaml
    from exmed_bert.stages import STAGES

    sections = {}
    default = pipeline.parse_args(pipeline.PipelineArgs, [], sections=sections)
    assert "logreg" in STAGES and "logreg" not in default.stages
    planned, _ = pipeline.plan(default, sections)
    assert "logreg" not in [s.name for s in planned]
    assert not any("logreg" in r for r in next(s for s in planned if s.name == "report").args.runs)

    config = tmp_path / "config.yaml"
    config.write_text("stages: [rf, logreg, report]\nlogreg:\n  C: 0.1\n  features: windows\n")
    sections = load_yaml(config)
    asked = pipeline.parse_args(pipeline.PipelineArgs, ["--config", str(config)], sections=sections)
    planned = {s.name: s for s in pipeline.plan(asked, sections)[0]}
    assert list(planned) == ["rf", "logreg", "report"]
    assert planned["logreg"].args == LogRegArgs(output_dir="output/logreg", data_dir="pretrain_stuff",
                                                task_data="data/task_specific.csv", C=0.1, features="windows")
    assert planned["logreg"].script == "train-logreg.py"
    assert planned["logreg"].args.output_dir == "output/logreg"
    assert planned["logreg"].args.data_dir == planned["rf"].args.data_dir
    assert planned["report"].args.runs == ["output/finetuned", "output/rf", "output/xgboost", "output/logreg"]
