"""The only thing RF and XGBoost do differently: which estimator is built (RF behind a train-median
imputer for unknown ages, XGBoost taking them as missing), and how it is saved.

Neither is pickled: XGBoost writes its own `model.json`; RF writes nothing the project reads back
(its top features go to `feature_importances.json` like XGBoost's).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ESTIMATORS = ("rf", "xgboost")
DISPLAY_NAMES = {"rf": "Random Forest", "xgboost": "XGBoost"}


def build_estimator(name: str, params: dict[str, Any], class_balance: np.ndarray | None = None):
    """A fresh sklearn-API classifier. `class_balance`: (K,) train class counts when weighting is on."""
    # Each library loads only for its own estimator: xgboost takes 1.8 s to import (python -X importtime),
    # which an RF run need not pay, and the reverse for scikit-learn's forest modules.
    if name == "rf":
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline

        max_features = params.get("max_features", "sqrt")
        forest = RandomForestClassifier(
            n_estimators=params["n_estimators"], max_depth=params.get("max_depth"),
            min_samples_leaf=params.get("min_samples_leaf", 1),
            max_features=None if max_features == "all" else max_features,
            class_weight="balanced" if class_balance is not None else None,
            n_jobs=params.get("n_jobs", 1), random_state=params.get("seed", 42))
        # sklearn's forests take NaN only in dense input; the features are sparse, and an unknown age is
        # NaN. Fill it with the TRAIN median (learned in fit, reused on val/test) and add a 0/1 column per
        # feature that had missing values in train, so the trees can still tell "unknown" apart.
        impute = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)
        return Pipeline([("impute", impute), ("forest", forest)])
    if name == "xgboost":
        from xgboost import XGBClassifier

        extra = {}
        if class_balance is not None and len(class_balance) == 2:
            extra["scale_pos_weight"] = float(class_balance[0]) / max(float(class_balance[1]), 1.0)
        return XGBClassifier(
            n_estimators=params["n_estimators"], max_depth=params.get("max_depth", 6),
            learning_rate=params.get("learning_rate", 0.1), subsample=params.get("subsample", 1.0),
            colsample_bytree=params.get("colsample_bytree", 1.0), tree_method="hist",
            n_jobs=params.get("n_jobs", 1), random_state=params.get("seed", 42), verbosity=0, **extra)
    raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATORS}")


def importances(estimator) -> np.ndarray:
    """(F,) feature importances: RF impurity decrease, XGBoost gain (normalised to sum 1).

    For the RF pipeline, a missing-value indicator's importance is added to its feature's, so the
    result stays aligned with the F input features.
    """
    if hasattr(estimator, "named_steps"):
        forest, impute = estimator.named_steps["forest"], estimator.named_steps["impute"]
        values = np.asarray(forest.feature_importances_, dtype=np.float64)
        n = impute.n_features_in_
        out = values[:n].copy()
        if impute.indicator_ is not None:
            np.add.at(out, impute.indicator_.features_, values[n:])
        return out
    if hasattr(estimator, "get_booster"):
        booster = estimator.get_booster()
        n = booster.num_features()
        gain = booster.get_score(importance_type="gain")
        out = np.zeros(n)
        for key, v in gain.items():  # keys are "f<index>" when no feature names were given
            out[int(key[1:])] = v
        return out / out.sum() if out.sum() > 0 else out
    return np.asarray(estimator.feature_importances_, dtype=np.float64)


def save_model(name: str, estimator, output_dir: str | os.PathLike) -> Path | None:
    """XGBoost -> model.json (atomic: temp name then rename). RF -> nothing (no pickles)."""
    if name != "xgboost":
        return None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".json", dir=out)
    os.close(fd)
    try:
        estimator.save_model(tmp)  # xgboost picks the JSON format from the suffix
        os.replace(tmp, out / "model.json")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out / "model.json"
