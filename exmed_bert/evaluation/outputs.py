"""One run's evaluation outputs, identical for ExMed-BERT, RF and XGBoost.

`metrics.json` (schema "exmed-bert-metrics" v1), `predictions.csv` (patient_id,label,probability),
for a binary task `predictions.parquet` (the MEDS prediction schema), and roc.png / pr.png /
calibration.png, all from the TEST split; the F1 threshold comes from VAL.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from exmed_bert.data.layout import meds_subject_ids, time_to_iso
from exmed_bert.evaluation import metrics as M
from exmed_bert.evaluation import plots
from exmed_bert.io import atomic_write, write_json, write_parquet

METRICS_FORMAT = "exmed-bert-metrics"


def write_predictions(path: str | os.PathLike, patient_ids: Sequence[str], labels: np.ndarray,
                      probs: np.ndarray, prediction_times: Sequence[int] | None = None) -> None:
    """Binary: patient_id,label,probability (of class 1). Multi-class adds prediction and prob_<k>. With
    `prediction_times` (microseconds since 1970) a prediction_time column (ISO 8601) follows patient_id:
    MEDS labels, whose rows are (subject, prediction time), a subject possibly in several.

    Probabilities are written at full precision (Python floats, which csv writes as repr: the shortest
    text that reads back to the same float64), so the report recomputes exactly the run's own AUROC and
    its ΔAUROC; rounding could merge distinct scores into ties and move both.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if prediction_times is None:
        keys, head = [[pid] for pid in patient_ids], ["patient_id"]
    else:
        keys, head = [[pid, time_to_iso(t)] for pid, t in zip(patient_ids, prediction_times)], ["patient_id",
                                                                                          "prediction_time"]
    with atomic_write(path) as f:
        w = csv.writer(f, lineterminator="\n")
        if probs.ndim == 1:
            w.writerow([*head, "label", "probability"])
            for key, y, p in zip(keys, labels, probs.tolist()):
                w.writerow([*key, int(y), p])
        else:
            k = probs.shape[1]
            w.writerow([*head, "label", "probability", "prediction", *[f"prob_{c}" for c in range(k)]])
            for key, y, row in zip(keys, labels, probs.tolist()):
                c = max(range(k), key=row.__getitem__)  # first maximum, as numpy's argmax
                w.writerow([*key, int(y), row[c], c, *row])


def write_meds_predictions(path: str | os.PathLike, patient_ids: Sequence[str], prediction_times: Sequence[int],
                           labels: np.ndarray, probs: np.ndarray, threshold: float) -> bool:
    """Binary predictions in the MEDS prediction schema: subject_id, prediction_time (timestamp[us];
    `prediction_times` in microseconds since 1970-01-01), boolean_value (the true label),
    predicted_boolean_value (probability >= the F1 threshold) and predicted_boolean_probability, float32 as
    meds-evaluation's strict `PredictionSchema.validate` types it (predictions.csv keeps full precision).
    subject_id is int64, as MEDS has it (`data.layout.meds_subject_ids`: integer ids as they are, the
    generator's P0042 as 42); ids with no such number get no file (returns False), never a string column."""
    import pyarrow as pa

    subjects = meds_subject_ids(patient_ids)
    if subjects is None:
        return False

    probs = np.asarray(probs, dtype=np.float64)
    table = pa.table({
        "subject_id": pa.array(subjects, pa.int64()),
        "prediction_time": pa.array(np.asarray(prediction_times, dtype=np.int64), pa.int64()).cast(pa.timestamp("us")),
        "boolean_value": pa.array(np.asarray(labels).astype(bool)),
        "predicted_boolean_value": pa.array(probs >= threshold),
        "predicted_boolean_probability": pa.array(probs.astype(np.float32), pa.float32()),
    })
    write_parquet(path, table)
    return True


def positive_probability(probs: np.ndarray) -> np.ndarray:
    """(n, 2) class probabilities -> (n,) P(class 1); (n, K>2) stays as is."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs[:, 1] if probs.ndim == 2 and probs.shape[1] == 2 else probs


def evaluate_and_write(output_dir: str | os.PathLike, model_name: str, *, test_ids: Sequence[str],
                       y_test: np.ndarray, p_test: np.ndarray, y_val: np.ndarray, p_val: np.ndarray,
                       n_bootstrap: int = 1000, seed: int = 42, extra: dict | None = None,
                       prediction_times: Sequence[int] | None = None) -> dict:
    """Score the test split (threshold chosen on val), write metrics.json, predictions.csv(.parquet), plots.

    p_test/p_val: (n,) P(class 1) for binary, (n, K) class probabilities for multi-class.
    metrics.json's `n_without_history`: test rows with no event before their prediction time (scored from
    age and sex; None when the run's task datasets are not known, exmed_bert.tasks.rows_without_history).
    prediction_times: microseconds since 1970-01-01 per test row, for predictions.parquet (and the
    prediction_time column of predictions.csv, for MEDS labels or a patient with several rows); when None
    they come from the task data the run read (`extra["data"]`, exmed_bert.tasks.task_prediction_times).
    A binary task writes predictions.parquet when its prediction times are known; multi-class does not
    (the MEDS prediction schema is binary).
    """
    out = Path(output_dir)
    y_test, y_val = np.asarray(y_test).astype(np.int64), np.asarray(y_val).astype(np.int64)
    p_test, p_val = positive_probability(p_test), positive_probability(p_val)
    groups = M.patient_groups(test_ids)   # patients with several rows (prediction times) are drawn whole
    if p_test.ndim == 1:
        threshold = M.choose_threshold(y_val, p_val)
        result = M.binary_metrics(y_test, p_test, threshold, n_bootstrap=n_bootstrap, seed=seed, groups=groups)
        result["threshold_source"] = "max F1 on val"
        val = {k: (M.headline_metric(k, y_val, p_val, threshold) if len(np.unique(y_val)) == 2 else None)
               for k in ("auroc", "auprc", "f1")}
    else:
        result = M.multiclass_metrics(y_test, p_test, n_bootstrap=n_bootstrap, seed=seed, groups=groups)
        val = {k: M.headline_metric(k, y_val, p_val) for k in ("auroc", "f1")}
    from exmed_bert.tasks import rows_without_history, task_prediction_times  # the task data this run read

    source = (extra or {}).get("data")
    doc = {"format": METRICS_FORMAT, "version": 1, "model": model_name, "split": "test", **result,
           "n_without_history": rows_without_history(source, test_ids),
           "val": {"n": int(len(y_val)), **val}, **(extra or {})}
    write_json(out / "metrics.json", doc)
    if prediction_times is None:
        prediction_times = task_prediction_times(source, test_ids)
    # rows are (subject, prediction time) for MEDS labels, or wherever a patient has several rows
    timed_rows = prediction_times is not None and (
        ((extra or {}).get("data") or {}).get("label_column") is not None or len(set(test_ids)) < len(test_ids))
    write_predictions(out / "predictions.csv", test_ids, y_test, p_test, prediction_times if timed_rows else None)
    if p_test.ndim == 1:
        if prediction_times is not None:
            if not write_meds_predictions(out / "predictions.parquet", test_ids, prediction_times, y_test, p_test,
                                          threshold):
                print("note: no predictions.parquet: the patient ids have no MEDS subject id (an integer, or "
                      "letters then a number as the generator writes them); predictions.csv has every row")
        curves = {model_name: (y_test, p_test)}
        plots.plot_roc(curves, out / "roc.png", title=f"{model_name}: ROC (test)")
        plots.plot_pr(curves, out / "pr.png", title=f"{model_name}: precision-recall (test)")
        plots.plot_calibration(curves, out / "calibration.png", title=f"{model_name}: calibration (test)")
    return doc


def format_summary(doc: dict) -> str:
    """One line for the terminal: AUROC [CI], AUPRC, F1 on n test patients."""
    m = doc["metrics"]
    key = "auroc" if "auroc" in m else "macro_auroc"

    def fmt(name: str) -> str:
        v = m.get(name, {})
        if v.get("value") is None:
            return f"{name} n/a"
        ci = f" [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" if v.get("ci_low") is not None else ""
        return f"{name} {v['value']:.3f}{ci}"

    parts = [fmt(key)] + [fmt(k) for k in ("auprc", "f1", "macro_f1", "brier") if k in m]
    return f"{doc['model']}: test n={doc['n']}: " + ", ".join(parts)
