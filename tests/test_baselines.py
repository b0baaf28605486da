"""Baselines: CSR features, the shared runner (every registry entry), the CLIs end to end, leakage, task CSV errors.

`write_claims_fixture` (also used by test_finetune and test_report) writes a small patients JSON with a
planted pre-date signal code and a post-date outcome code, converts it with the real converter, and
writes the task CSV.
"""

import csv
import json
import random
from datetime import date, timedelta

import numpy as np
import pytest
import scipy.sparse as sp

from exmed_bert.baselines import registry
from exmed_bert.baselines.args import RFArgs, XGBArgs
from exmed_bert.baselines.features import code_counts, featurize
from exmed_bert.baselines.runner import run_baseline
from exmed_bert.io import file_fingerprint

PRED_DATE = date(2021, 1, 1)
SIGNAL = "E11.9"        # planted before the prediction date, mostly in positives
OUTCOME = "I21.9"       # only after the prediction date, only in positives: a leak if it got in
NOISE_DX = ["I10", "J45.909", "E78.5", "K21.9", "F32.9", "N39.0", "J06.9", "M79.1", "R51.9", "L30.9"]
NOISE_RX = ["C09AA05", "C10AA05", "N02BE01", "R03AC02", "A02BC01"]
NOISE_PX = ["99213", "99214", "80053", "85025", "93000"]


def make_patients(n: int, seed: int = 0, signal_rates: tuple[float, float] = (0.85, 0.1)
                  ) -> tuple[list[dict], list[tuple[str, int, str]]]:
    """`signal_rates`: how often SIGNAL is planted before the date in (positives, negatives)."""
    rng = random.Random(seed)
    patients, task = [], []
    for i in range(n):
        pid = f"P{i:04d}"
        label = int(rng.random() < 0.4)
        dx, rx, px = [], [], []
        for _ in range(rng.randint(3, 7)):  # visits before the prediction date
            day = (PRED_DATE - timedelta(days=rng.randint(10, 900))).isoformat()
            dx.append({"code": rng.choice(NOISE_DX), "date": day})
            if rng.random() < 0.5:
                rx.append({"code": rng.choice(NOISE_RX), "date": day})
            px.append({"code": rng.choice(NOISE_PX), "date": day})
        if rng.random() < signal_rates[0 if label else 1]:
            dx.append({"code": SIGNAL, "date": (PRED_DATE - timedelta(days=rng.randint(5, 300))).isoformat()})
        after = (PRED_DATE + timedelta(days=rng.randint(1, 200))).isoformat()
        dx.append({"code": OUTCOME if label else rng.choice(NOISE_DX), "date": after})
        patients.append({"patient_id": pid, "birth_date": f"{rng.randint(1940, 1990)}-0{rng.randint(1, 9)}-15",
                         "sex": rng.choice("FM"), "diagnoses": dx, "prescriptions": rx, "procedures": px,
                         "hospitalizations": []})
        task.append((pid, label, PRED_DATE.isoformat()))
    return patients, task


def write_task_csv(path, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "label", "prediction_date"])
        w.writerows(rows)


def write_claims_fixture(tmp_path, n: int = 60, seed: int = 0, signal_rates: tuple[float, float] = (0.85, 0.1)) -> dict:
    """patients.json, task.csv and a conversion in data/ (pretraining + task datasets)."""
    from exmed_bert.convert.conversion import convert_patients

    patients, task = make_patients(n, seed, signal_rates)
    pj = tmp_path / "patients.json"
    pj.write_text(json.dumps({"patients": patients, "metadata": {"oracle_auroc": 0.9}}))
    tc = tmp_path / "task.csv"
    write_task_csv(tc, task)
    data = tmp_path / "data"
    convert_patients(pj, data / "synthetic.pt", task_data=tc, seed=1, progress=False)
    return {"patients": pj, "task": tc, "data": data, "labels": {p: y for p, y, _ in task}}


# ---------------------------------------------------------------------------------------------
# features on a hand-built dataset dict


def hand_dataset():
    # two patients: [CLS] 5 6 [SEP] 5 [SEP] | [CLS] 7 [UNK] [SEP]
    import torch

    return {"input_ids": torch.tensor([2, 5, 6, 3, 5, 3, 2, 7, 1, 3], dtype=torch.int32),
            "age_ids": torch.tensor([50] * 6 + [30] * 4, dtype=torch.int16),
            "offsets": torch.tensor([0, 6, 10]), "sex": torch.tensor([1, 2], dtype=torch.int8),
            "birth_days": torch.tensor([0, 3652], dtype=torch.int32),
            "prediction_days": torch.tensor([18262, 18262], dtype=torch.int32),
            "labels": torch.tensor([1, 0])}


def test_code_counts_are_csr_counts_without_special_tokens():
    m = code_counts(hand_dataset(), vocab_size=8)
    assert sp.isspmatrix_csr(m) and m.shape == (2, 8)
    dense = m.toarray()
    assert dense[0].tolist() == [0, 0, 0, 0, 0, 2, 1, 0]  # code 5 twice, code 6 once; CLS/SEP dropped
    assert dense[1].tolist() == [0, 1, 0, 0, 0, 0, 0, 1]  # [UNK] kept: unseen codes still carry signal


def test_featurize_adds_age_at_prediction_and_sex():
    X = featurize(hand_dataset(), vocab_size=8).toarray()
    assert X.shape == (2, 11)
    assert X[0, 8] == pytest.approx(18262 / 365.25)            # age in years at the prediction date
    assert X[1, 8] == pytest.approx((18262 - 3652) / 365.25)
    assert X[:, 9].tolist() == [1, 0] and X[:, 10].tolist() == [0, 1]   # sex_F, sex_M


def test_vocab_mismatch_is_an_error():
    with pytest.raises(ValueError, match="different vocab"):
        code_counts(hand_dataset(), vocab_size=6)


# ---------------------------------------------------------------------------------------------
# runner: the baselines differ only in their registry entry


def synthetic_splits(n=300, seed=0, signal_id=9, vocab=40):
    import torch

    rng = np.random.default_rng(seed)
    out = {}
    for s, k in (("train", n), ("val", n // 3), ("test", n // 3)):
        y = (rng.random(k) < 0.4).astype(np.int64)
        toks, offs = [], [0]
        for yi in y:
            codes = list(rng.integers(10, vocab, rng.integers(3, 9)))
            if rng.random() < (0.9 if yi else 0.1):
                codes.append(signal_id)
            toks += [2, *codes, 3]
            offs.append(len(toks))
        out[s] = {"input_ids": torch.tensor(toks, dtype=torch.int32), "offsets": torch.tensor(offs),
                  "age_ids": torch.full((len(toks),), 60, dtype=torch.int16),
                  "sex": torch.tensor(rng.integers(1, 3, k), dtype=torch.int8),
                  "labels": torch.tensor(y), "patient_ids": [f"{s}{i}" for i in range(k)]}
    return out


# each baseline's settings for a quick fit (RF/XGBoost: 50 trees of depth 4 on one thread)
QUICK = {"rf": {"n_estimators": 50, "max_depth": 4, "n_jobs": 1},
         "xgboost": {"n_estimators": 50, "max_depth": 4, "n_jobs": 1}}


def quick_args(name: str, output_dir, **kw):
    return registry.get(name).args(output_dir=str(output_dir), **{**QUICK.get(name, {}), **kw})


@pytest.mark.parametrize("name", registry.NAMES)
def test_runner_finds_planted_code_and_writes_outputs(tmp_path, name):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"icd10cm:X{i:02d}" for i in range(5, 40)]
    doc = run_baseline(quick_args(name, tmp_path, n_bootstrap=100), synthetic_splits(), tokens)
    assert doc["metrics"]["auroc"]["value"] > 0.85
    assert doc["n"] == 100 and 0 < doc["prevalence"] < 1
    top = json.loads((tmp_path / "feature_importances.json").read_text())["top"]
    assert top[0]["feature"] == "icd10cm:X09"  # the planted code ranks first
    for f in ("metrics.json", "predictions.csv", "roc.png", "pr.png", "calibration.png", "top_features.png"):
        assert (tmp_path / f).is_file(), f
    assert doc["model"] == registry.get(name).display_name and doc["estimator"] == name
    assert (tmp_path / "model.json").is_file() == (name == "xgboost")
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.joblib"))
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    assert len(rows) == 100 and set(rows[0]) == {"patient_id", "label", "probability"}


def test_xgboost_model_json_loads_back(tmp_path):
    from xgboost import XGBClassifier

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"cpt:{i}" for i in range(5, 40)]
    run_baseline(XGBArgs(output_dir=str(tmp_path), n_estimators=10, n_jobs=1, n_bootstrap=20),
                 synthetic_splits(n=90), tokens)
    m = XGBClassifier()
    m.load_model(tmp_path / "model.json")
    assert m.get_booster().num_features() == 43  # 40 codes + age + sex_F + sex_M


def test_label_shuffle_gives_chance_auroc(tmp_path):
    splits = synthetic_splits(n=600, seed=3)
    rng = np.random.default_rng(0)
    for s in splits.values():
        s["labels"] = s["labels"][rng.permutation(len(s["labels"]))]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"atc:X{i}" for i in range(5, 40)]
    doc = run_baseline(RFArgs(output_dir=str(tmp_path), n_estimators=50, n_jobs=1, min_samples_leaf=5,
                              n_bootstrap=100), splits, tokens)
    assert abs(doc["metrics"]["auroc"]["value"] - 0.5) < 0.12


def test_missing_class_in_train_is_a_user_error(tmp_path):
    from exmed_bert.errors import UserError

    splits = synthetic_splits(n=60)
    splits["train"]["labels"] = splits["train"]["labels"] * 0
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"atc:X{i}" for i in range(5, 40)]
    with pytest.raises(UserError, match="no training patient has label"):
        run_baseline(RFArgs(output_dir=str(tmp_path), n_estimators=5, n_jobs=1), splits, tokens)


# ---------------------------------------------------------------------------------------------
# end to end through the real converter and CLI


@pytest.fixture(scope="module")
def claims(tmp_path_factory):
    # 400 patients leave about 44 for the test split; SIGNAL in 95% of positives and 5% of negatives
    return write_claims_fixture(tmp_path_factory.mktemp("claims"), n=400, signal_rates=(0.95, 0.05))


def planted_rule_auroc(claims, predictions_csv) -> float:
    """AUROC on the predicted patients of the planted rule "SIGNAL before the prediction date", read from
    the source records (not from the pipeline under test): what a model that found the code can reach."""
    from sklearn.metrics import roc_auc_score

    records = {p["patient_id"]: p for p in json.loads(claims["patients"].read_text())["patients"]}
    rows = list(csv.DictReader(open(predictions_csv)))
    rule = [int(any(e["code"] == SIGNAL and date.fromisoformat(e["date"]) < PRED_DATE
                    for e in records[r["patient_id"]]["diagnoses"])) for r in rows]
    return roc_auc_score([int(r["label"]) for r in rows], rule)


def test_leaky_features_score_near_one_but_real_pipeline_does_not(claims, tmp_path):
    """Post-prediction events (the outcome code) must never reach the features."""
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab

    vocab = Vocab.load(claims["data"] / "vocab.json")
    outcome_id = vocab.id(f"icd10cm:{OUTCOME}")
    assert outcome_id > 4, "the outcome code should be in the (pretraining) vocabulary"
    for split in ("train", "val", "test"):
        task = PatientDataset.load(claims["data"] / f"synthetic_task_{split}.pt")
        assert outcome_id not in set(task.data["input_ids"].tolist())
    # leaky model: counts from the full, un-cut history of the same patients
    from sklearn.metrics import roc_auc_score

    full = {s: PatientDataset.load(claims["data"] / f"synthetic_{s}.pt") for s in ("train", "val", "test")}
    ys = np.array([claims["labels"][p] for s in full.values() for p in s.patient_ids])
    leak = np.concatenate([code_counts(s.data, len(vocab))[:, outcome_id].toarray().ravel() for s in full.values()])
    assert roc_auc_score(ys, leak) > 0.99
    cut = np.concatenate([code_counts(PatientDataset.load(claims["data"] / f"synthetic_task_{s}.pt").data,
                                      len(vocab))[:, outcome_id].toarray().ravel() for s in full])
    assert cut.sum() == 0


@pytest.mark.parametrize("main_name", ["main_rf", "main_xgboost"])
def test_cli_end_to_end(claims, tmp_path, main_name):
    from exmed_bert.cli import baselines

    out = tmp_path / main_name
    rc = getattr(baselines, main_name)(["--data-dir", str(claims["data"]), "--task-data", str(claims["task"]),
                                        "--output-dir", str(out), "--n-estimators", "30", "--n-jobs", "1",
                                        "--n-bootstrap", "50"])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["format"] == "exmed-bert-metrics" and doc["split"] == "test"
    # A model that found the code ranks like the rule, its ties broken by noise codes. Measured on 20
    # fixtures (seeds 0-9, SIGNAL rates 0.85/0.1 and 0.95/0.05; RF and XGBoost, 44 test patients): model
    # minus rule AUROC between -0.055 and +0.058; 0.08 leaves room for that. A model blind to the code
    # (shuffled labels) scores about 0.5, far below the rule's 0.85 or more minus 0.08.
    rule = planted_rule_auroc(claims, out / "predictions.csv")
    assert rule >= 0.85, "the fixture should plant a strong signal"
    assert doc["metrics"]["auroc"]["value"] >= rule - 0.08, (doc["metrics"]["auroc"], rule)
    assert json.loads((out / "run_config.json").read_text())["args"]["n_estimators"] == 30
    assert not (out / "task_rejected.csv").exists()


def test_task_csv_bad_rows_are_counted_skips(claims, tmp_path, capsys):
    from exmed_bert.cli.baselines import main_rf

    rows = [(p, y, PRED_DATE.isoformat()) for p, y in claims["labels"].items()]
    rows += [("NOPE1", 1, "2021-01-01"), ("P0001", 1, "2021-01-01"), ("P9999", "yes", "2021-01-01"),
             ("P9998", 3, "2021-01-01"), ("P9997", 0, "2021-02-30")]
    bad = tmp_path / "bad.csv"
    write_task_csv(bad, rows)
    out = tmp_path / "rf"
    rc = main_rf(["--data-dir", str(claims["data"]), "--task-data", str(bad), "--output-dir", str(out),
                  "--n-estimators", "10", "--n-jobs", "1", "--n-bootstrap", "20"])
    assert rc == 0
    rejected = list(csv.DictReader(open(out / "task_rejected.csv")))
    reasons = " | ".join(r["reason"] for r in rejected)
    assert len(rejected) == 5
    for word in ("unknown patient id", "duplicate", "not an integer", "out of range", "YYYY-MM-DD"):
        assert word in reasons
    assert "skipped 5 of" in capsys.readouterr().err
    # the accepted rows reach the converter in memory: no cleaned copy of the CSV is written and re-read,
    # and the task datasets record which rows they hold, so the same CSV reuses them
    assert not (out / "task_valid_rows.csv").exists()
    task_man = json.loads((claims["data"] / "synthetic_task_manifest.json").read_text())["task"]
    assert task_man["task_data"] == str(bad) and task_man["task_fingerprint"] != file_fingerprint(bad)
    built = (claims["data"] / "synthetic_task_train.pt").stat().st_mtime_ns
    assert main_rf(["--data-dir", str(claims["data"]), "--task-data", str(bad), "--output-dir", str(out),
                    "--n-estimators", "10", "--n-jobs", "1", "--n-bootstrap", "20"]) == 0
    assert (claims["data"] / "synthetic_task_train.pt").stat().st_mtime_ns == built
    capsys.readouterr()
    # --on-task-error fail: the first bad row is a one-line error with exit status 2
    rc = main_rf(["--data-dir", str(claims["data"]), "--task-data", str(bad), "--output-dir", str(out),
                  "--on-task-error", "fail"])
    err = capsys.readouterr().err
    assert rc == 2 and "line" in err and "Traceback" not in err


@pytest.mark.parametrize("content,match", [("", "empty file"), ("id,y\n1,0\n", "missing column"),
                                           (b"\xff\xfe\x00bad", "not UTF-8")])
def test_unusable_task_csv_exits_2(claims, tmp_path, capsys, content, match):
    from exmed_bert.cli.baselines import main_xgboost

    bad = tmp_path / "t.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc = main_xgboost(["--data-dir", str(claims["data"]), "--task-data", str(bad),
                       "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and str(bad) in err
    assert not (tmp_path / "o" / "metrics.json").exists()
