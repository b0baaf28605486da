"""The test-split oracle: the generator's per-patient true risk (`<task stem>_risk.csv`), found beside the
task CSV the runs recorded, scored against the labels of exactly the patients the models are compared on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from exmed_bert.errors import UserError
from exmed_bert.evaluation import metrics as M
from exmed_bert.data.layout import risk_path


def recorded_task_csvs(run_folders: Sequence[Path]) -> list[Path]:
    """The task CSVs the runs say they used, in run order without repeats: metrics.json's
    `data.task_data` (what the task reader opened), else run_config.json's `args.task_data`."""
    found: list[Path] = []
    for folder in run_folders:
        for name, keys in (("metrics.json", ("data", "task_data")), ("run_config.json", ("args", "task_data"))):
            try:
                value = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
                for k in keys:
                    value = value[k]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(value, str) and value and Path(value) not in found:
                found.append(Path(value))
            break
    return found


def find_risk_file(run_folders: Sequence[Path], risk_file: str | os.PathLike | None = None,
                   task_data: str | os.PathLike | None = None) -> tuple[Path | None, list[Path]]:
    """(the risk file to use or None, the paths looked at). An explicit `risk_file` must exist; otherwise
    the first `<task stem>_risk.csv` that exists beside `task_data` or a task CSV the runs recorded."""
    if risk_file is not None:
        path = Path(risk_file)
        if not path.is_file():
            raise UserError(f"--risk-file {path}: not found; give the <task stem>_risk.csv the generator wrote "
                            "beside the task CSV, or leave the flag out to find it from the runs")
        return path, [path]
    tasks = ([Path(task_data)] if task_data else []) + recorded_task_csvs(run_folders)
    looked = list(dict.fromkeys(risk_path(t) for t in tasks))
    return next((p for p in looked if p.is_file()), None), looked


def read_risk(path: str | os.PathLike) -> pd.Series:
    """patient_id -> true risk (float64, exactly as written) from a `patient_id,true_risk` CSV."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"patient_id": str}, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: not a patient_id,true_risk CSV ({str(e).splitlines()[0]})") from None
    if list(df.columns[:2]) != ["patient_id", "true_risk"]:
        raise UserError(f"{path}: the header must start patient_id,true_risk, got {','.join(map(str, df.columns))}")
    risk = pd.to_numeric(df["true_risk"], errors="coerce")
    bad = np.flatnonzero(~risk.between(0.0, 1.0).to_numpy())  # NaN (not a number) fails too
    if len(bad):
        raise UserError(f"{path}: line {bad[0] + 2}: true_risk must be a probability in [0, 1], "
                        f"got {df['true_risk'].iloc[bad[0]]!r}")
    dup = df["patient_id"].duplicated()
    if dup.any():
        raise UserError(f"{path}: patient_id {df['patient_id'][dup].iloc[0]} appears twice")
    return pd.Series(risk.to_numpy(dtype=np.float64), index=df["patient_id"])


def oracle_on_test_split(path: Path, patients: Sequence[str], y: np.ndarray, probs: Sequence[np.ndarray],
                         names: Sequence[str], n_bootstrap: int, seed: int) -> dict:
    """The oracle AUROC on exactly the compared rows (labels y, (n,); `patients`: each row's patient id,
    which repeats when a patient has a row per prediction time), with a CI from the same bootstrap
    resamples as the paired ΔAUROC (patients drawn with all their rows), and each model's paired gap
    (model - oracle). The risk file holds one true risk per patient; every row of a patient takes it.

    A risk file that lacks some of these patients belongs to another cohort: a UserError, not a quiet
    oracle on a subset.
    """
    patients = list(patients)
    risk = read_risk(path).reindex(patients).to_numpy()
    missing = np.flatnonzero(np.isnan(risk))
    if len(missing):
        n_missing = len({patients[i] for i in missing})
        raise UserError(f"{path}: no true risk for {n_missing} of the {len(set(patients))} compared test patients "
                        f"(e.g. {patients[missing[0]]}); it is from another generation than the runs' task CSV - "
                        "pass the matching --risk-file, or remove this one to report without an oracle")
    res = M.auroc_gaps_to_reference(y, risk, list(probs), n_bootstrap=n_bootstrap, seed=seed,
                                    groups=M.patient_groups(patients))
    return {"auroc": res["reference"]["value"], "ci_low": res["reference"]["ci_low"],
            "ci_high": res["reference"]["ci_high"], "n": res["n"], "n_patients": len(set(patients)),
            "n_positive": int(np.sum(y)),
            "patients": "the compared test patients", "risk_file": str(path), "n_bootstrap": n_bootstrap,
            "seed": seed,
            "gaps": {name: {"auroc": m["auroc"], "gap": m["gap"]["value"], "ci_low": m["gap"]["ci_low"],
                            "ci_high": m["gap"]["ci_high"], "p_value": m["gap"]["p_value"],
                            "standing": standing(m["gap"])}
                     for name, m in zip(names, res["models"])}}


def standing(gap: dict) -> str:
    """Where a model stands against the oracle, in words, from its paired gap (model - oracle) and CI."""
    if gap["value"] is None or gap["ci_low"] is None:
        return "not comparable (a class is missing from the test split)"
    if gap["ci_high"] < 0:
        return f"{-gap['value']:.3f} below the oracle"
    if gap["ci_low"] > 0:
        return (f"{gap['value']:.3f} above the oracle, beyond sampling noise: no model beats the true risk "
                "on average, so look for post-prediction-date information in its inputs")
    return "within sampling noise of the oracle"
