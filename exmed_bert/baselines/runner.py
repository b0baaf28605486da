"""Shared baseline run: featurise the task splits, fit on train, pick the F1 cut on val, score test.

Every baseline goes through exactly this code; its `registry` entry (builder, importances, saving) is the
only fork. `run(args)` is the stage for each baseline's settings class.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from exmed_bert.baselines import registry
from exmed_bert.baselines.args import BaselineArgs
from exmed_bert.baselines.features import DESCRIPTIONS, feature_names, featurize, labels_of, order_pairs
from exmed_bert.codes import describe
from exmed_bert.errors import UserError
from exmed_bert.evaluation import plots
from exmed_bert.evaluation.outputs import evaluate_and_write, format_summary
from exmed_bert.io import file_fingerprint, write_json, write_run_info
from exmed_bert.tasks import check_labels, load_task_splits


def describe_token(token: str) -> str | None:
    """Human name of a vocabulary token such as "icd10cm:E11.65" (None when unknown)."""
    if ":" not in token:
        return None
    system, code = token.split(":", 1)
    try:
        return describe(code, system)
    except Exception:  # noqa: BLE001 - a name is a nicety; an odd code must not sink the run
        return None


def top_features(names: Sequence[str], values: np.ndarray, k: int = 30) -> list[dict]:
    order = np.argsort(-values, kind="stable")[:k]
    return [{"rank": r + 1, "feature": names[i], "description": describe_token(names[i]),
             "importance": float(values[i])} for r, i in enumerate(order) if values[i] > 0]


def run_baseline(args: BaselineArgs, splits: Mapping[str, Mapping], vocab_tokens: Sequence[str], *,
                 extra: dict | None = None, top_k: int = 30, vocab_counts: Sequence[int] | None = None) -> dict:
    """Fit the baseline of `args` (its registry entry) on splits["train"], select the threshold on "val",
    score "test".

    splits: split name -> encoded task dataset dict (with `labels`). Writes metrics.json,
    predictions.csv, roc/pr/calibration PNGs, feature_importances.json, top_features.png
    (and the entry's saved model) into args.output_dir; returns the metrics document.
    """
    baseline = registry.for_class(type(args))
    if args.features not in baseline.features:
        raise UserError(f"{baseline.script} takes --features {' or '.join(baseline.features)}, not {args.features}")
    out = Path(args.output_dir)
    V = len(vocab_tokens)
    # windows_order's (drug, diagnosis) columns come from the vocabulary's counts (train split, no labels)
    if args.features == "windows_order" and vocab_counts is None:
        raise UserError("--features windows_order needs the vocabulary's counts (vocab.json)")
    pairs = order_pairs(vocab_tokens, vocab_counts) if args.features == "windows_order" else None
    X = {s: featurize(splits[s], V, args.features, pairs=pairs) for s in ("train", "val", "test")}  # (N_s, width) CSR
    y = {s: labels_of(splits[s], f"{s} split") for s in ("train", "val", "test")}
    for s in ("train", "val", "test"):
        if len(y[s]) == 0:
            raise UserError(f"the {s} split of the task has no patients; use more patients or a task CSV "
                            "that covers every split")
    check_labels(y["train"], args.num_labels, "train split")
    balance = np.bincount(y["train"], minlength=args.num_labels) if args.class_weights == "auto" else None

    model = baseline.build(args, balance)
    t0 = time.perf_counter()
    model.fit(X["train"], y["train"])
    fit_seconds = time.perf_counter() - t0
    P_val, P_test = model.predict_proba(X["val"]), model.predict_proba(X["test"])  # (N, K)

    names = feature_names(vocab_tokens, args.features, pairs)
    params = args.estimator_params()
    doc = evaluate_and_write(
        out, baseline.display_name, test_ids=list(splits["test"]["patient_ids"]), y_test=y["test"],
        p_test=P_test, y_val=y["val"], p_val=P_val, n_bootstrap=args.n_bootstrap, seed=args.seed,
        extra={"estimator": baseline.name, "params": params, "class_weights": args.class_weights,
               "features": args.features, "inputs": DESCRIPTIONS[args.features],
               "n_train": int(len(y["train"])), "n_features": len(names),
               "fit_seconds": round(fit_seconds, 3), **(extra or {})})
    if baseline.importances is not None:
        top = top_features(names, baseline.importances(model), k=top_k)
        write_json(out / "feature_importances.json",
                   {"estimator": baseline.name, "importance": baseline.importance_kind, "top": top})
        if top:
            shown = top[:20]
            plots.plot_top_features([f"{t['feature']}  {t['description'] or ''}".strip() for t in shown],
                                    [t["importance"] for t in shown], out / "top_features.png",
                                    title=f"{baseline.display_name}: top features")
    if baseline.save is not None:
        baseline.save(model, out)
    return doc


def run(args: BaselineArgs) -> dict:
    """A baseline stage (the registry entry of `args`' class): task splits, fit, test metrics, run_config
    beside them; returns the metrics document."""
    splits, vocab, source = load_task_splits(
        args.data_dir, args.task_data, num_labels=args.num_labels, output_dir=args.output_dir,
        on_error=args.on_task_error)
    data = {s: ds.data for s, ds in splits.items()}
    fingerprint = {s: file_fingerprint(ds.path) for s, ds in splits.items() if ds.path is not None}
    write_run_info(args.output_dir, args, extra={"data": source, "data_fingerprint": fingerprint})
    doc = run_baseline(args, data, vocab.tokens, extra={"data": source}, vocab_counts=vocab.counts)
    print(format_summary(doc))
    print(f"wrote {args.output_dir}/metrics.json, predictions.csv (+ predictions.parquet for binary tasks) and plots")
    return doc
