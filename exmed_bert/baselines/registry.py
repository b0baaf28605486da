"""The baselines, one entry each: its name (the stage name), settings class, display name, builder,
importances and how it is saved. The pipeline's stages, the report's default runs and the
commands all read their baseline names from `BASELINES`; adding an estimator is one entry here plus its
settings class and its script.

Light to import: scikit-learn and xgboost load inside the builders, so config.yaml and --help read the
settings classes without them (each takes 0.5-2 s to import, `python -X importtime`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from exmed_bert.baselines.args import BaselineArgs, LogRegArgs, RFArgs, XGBArgs
from exmed_bert.errors import UserError
from exmed_bert.io import write_json


@dataclass(frozen=True)
class Baseline:
    name: str                  # the stage: pipeline stage, config.yaml section, output folder, train-<name>.py
    args: type[BaselineArgs]   # its own settings (the shared ones come from BaselineArgs)
    display_name: str          # metrics.json's "model", the report's row
    # fit-ready sklearn-API classifier; class_balance: (K,) train class counts when class weighting is on
    build: Callable[[Any, np.ndarray | None], Any]
    importances: Callable[[Any], np.ndarray] | None  # (F,) per input feature, from the fitted estimator
    importance_kind: str       # what feature_importances.json's numbers are
    save: Callable[[Any, Path], Path | None] | None = None  # writes the fitted model (never a pickle)
    in_default_pipeline: bool = True  # in the pipeline's default `stages:`

    @property
    def script(self) -> str:
        return f"train-{self.name}.py"

    @property
    def features(self) -> tuple[str, ...]:
        """The feature sets it takes: the choices of its settings' `features` field."""
        return tuple(next(f for f in fields(self.args) if f.name == "features").metadata["choices"])


# ---------------------------------------------------------------------------------------------
# importances shared by the estimators that sit behind the unknown-age imputer


def _impute_unknown_age():
    """sklearn's forests and linear models take no NaN in sparse input, and an unknown age is NaN. Fill it
    with the TRAIN median (learned in fit, reused on val/test) and add a 0/1 column per feature that had
    missing values in train, so the model can still tell "unknown" apart."""
    from sklearn.impute import SimpleImputer

    return SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)


def _fold_indicators(pipeline, values: np.ndarray) -> np.ndarray:
    """(F,) from the (F + indicators,) values of the model behind the imputer: a missing-value
    indicator's share is added to its feature's, so the result stays aligned with the input features."""
    impute = pipeline.named_steps["impute"]
    n = impute.n_features_in_
    out = np.asarray(values[:n], dtype=np.float64).copy()
    if impute.indicator_ is not None:
        np.add.at(out, impute.indicator_.features_, values[n:])
    return out


# ---------------------------------------------------------------------------------------------
# Random Forest


def build_rf(args: RFArgs, class_balance: np.ndarray | None = None):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    forest = RandomForestClassifier(
        n_estimators=args.n_estimators, max_depth=args.max_depth, min_samples_leaf=args.min_samples_leaf,
        max_features=None if args.max_features == "all" else args.max_features,
        class_weight="balanced" if class_balance is not None else None,
        n_jobs=args.n_jobs, random_state=args.seed)
    return Pipeline([("impute", _impute_unknown_age()), ("model", forest)])


def rf_importances(pipeline) -> np.ndarray:
    """(F,) mean impurity decrease per input feature."""
    return _fold_indicators(pipeline, pipeline.named_steps["model"].feature_importances_)


# ---------------------------------------------------------------------------------------------
# XGBoost: takes an unknown age as missing and learns where to send it


def build_xgboost(args: XGBArgs, class_balance: np.ndarray | None = None):
    from xgboost import XGBClassifier

    extra = {}
    if class_balance is not None and len(class_balance) == 2:
        extra["scale_pos_weight"] = float(class_balance[0]) / max(float(class_balance[1]), 1.0)
    return XGBClassifier(
        n_estimators=args.n_estimators, max_depth=args.max_depth, learning_rate=args.learning_rate,
        subsample=args.subsample, colsample_bytree=args.colsample_bytree, tree_method="hist",
        n_jobs=args.n_jobs, random_state=args.seed, verbosity=0, **extra)


def xgboost_importances(model) -> np.ndarray:
    """(F,) total gain per input feature, normalised to sum 1."""
    booster = model.get_booster()
    out = np.zeros(booster.num_features())
    for key, v in booster.get_score(importance_type="gain").items():  # keys are "f<index>" (no feature names)
        out[int(key[1:])] = v
    return out / out.sum() if out.sum() > 0 else out


def save_xgboost(model, output_dir: str | os.PathLike) -> Path:
    """XGBoost's own model.json (atomic: temp name then rename)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".json", dir=out)
    os.close(fd)
    try:
        model.save_model(tmp)  # xgboost picks the JSON format from the suffix
        os.replace(tmp, out / "model.json")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out / "model.json"


# ---------------------------------------------------------------------------------------------
# Logistic regression: the linear baseline. Counts (and days) are heavy-tailed, so each column goes to a
# log scale and is divided by its largest train value; both keep zeros zero, so the input stays sparse.


def signed_log1p(X):
    """sign(x) * log1p(|x|), on the stored values of a sparse matrix (zeros stay zero) or on an array."""
    if hasattr(X, "tocsr"):  # scipy sparse
        X = X.tocsr(copy=True)
        X.data = np.sign(X.data) * np.log1p(np.abs(X.data))
        return X
    return np.sign(X) * np.log1p(np.abs(X))


def build_logreg(args: LogRegArgs, class_balance: np.ndarray | None = None):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler

    model = LogisticRegression(C=args.C, max_iter=args.max_iter, random_state=args.seed,
                               class_weight="balanced" if class_balance is not None else None)
    return Pipeline([("impute", _impute_unknown_age()), ("log", FunctionTransformer(signed_log1p)),
                     ("scale", MaxAbsScaler()), ("model", model)])


def logreg_importances(pipeline) -> np.ndarray:
    """(F,) |coefficient| per input feature on the scaled columns, averaged over the classes' rows."""
    return _fold_indicators(pipeline, np.abs(pipeline.named_steps["model"].coef_).mean(axis=0))


def save_logreg(pipeline, output_dir: str | os.PathLike) -> Path:
    """coefficients.json: everything that turns a feature row into the probabilities, as numbers."""
    impute, scale, model = (pipeline.named_steps[k] for k in ("impute", "scale", "model"))
    path = Path(output_dir) / "coefficients.json"
    write_json(path, {
        "format": "exmed-bert-logreg", "version": 1,
        # columns: the input features (metrics.json's n_features, in features.feature_names order), then a
        # 0/1 "was missing" column for each of `indicator_features`
        "steps": "missing -> impute_statistics (+ indicator columns); x -> sign(x) * log1p(|x|) / scale; "
                 "p = sigmoid(coef . x + intercept) for two classes, softmax over the rows of coef otherwise",
        "impute_statistics": impute.statistics_.tolist(),
        "indicator_features": [] if impute.indicator_ is None else impute.indicator_.features_.tolist(),
        "scale": scale.scale_.tolist(),  # each column's largest |value| in train (1 for an all-zero one)
        "classes": model.classes_.tolist(), "coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()})
    return path


# ---------------------------------------------------------------------------------------------
# the registry

BASELINES: tuple[Baseline, ...] = (
    Baseline("rf", RFArgs, "Random Forest", build_rf, rf_importances, "mean impurity decrease"),
    Baseline("xgboost", XGBArgs, "XGBoost", build_xgboost, xgboost_importances, "gain", save=save_xgboost),
    Baseline("logreg", LogRegArgs, "Logistic regression", build_logreg, logreg_importances,
             "|coefficient| on log1p, max-abs-scaled features", save=save_logreg, in_default_pipeline=False),
)
NAMES: tuple[str, ...] = tuple(b.name for b in BASELINES)


def get(name: str) -> Baseline:
    for b in BASELINES:
        if b.name == name:
            return b
    raise UserError(f"unknown baseline {name!r}; expected one of {', '.join(NAMES)}")


def for_class(args_class: type) -> Baseline:
    """The entry of a settings class (`type(args)` of a baseline's args)."""
    for b in BASELINES:
        if args_class is b.args:
            return b
    raise UserError(f"{args_class.__name__} is no baseline's settings; expected one of "
                    f"{', '.join(b.args.__name__ for b in BASELINES)}")
