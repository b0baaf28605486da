"""The comparison report: every run's test metrics, paired bootstrap ΔAUROC on the same patients, the
oracle AUROC (the generator's true risk) on those same test patients with each model's gap to it, ROC and
calibration plots, and a plain statement of who wins. `run(CompareArgs)` is the stage.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from exmed_bert.errors import UserError
from exmed_bert.evaluation import metrics as M
from exmed_bert.evaluation import plots
from exmed_bert.evaluation.args import CompareArgs
from exmed_bert.evaluation.oracle import find_risk_file, oracle_on_test_split
from exmed_bert.io import write_json, write_text


@dataclass
class Run:
    name: str
    folder: Path
    metrics: dict
    ids: list[str]      # a row's key: patient_id, or "<patient_id>@<prediction_time>" when the run wrote times
    labels: np.ndarray  # (n,)
    probs: np.ndarray   # (n,) P(class 1)
    patients: list[str] = field(default_factory=list)   # each row's patient_id (ids without the time)


def load_run(folder: str | os.PathLike) -> Run:
    folder = Path(folder)
    mpath, ppath = folder / "metrics.json", folder / "predictions.csv"
    for p in (mpath, ppath):
        if not p.is_file():
            raise UserError(f"{p}: not found; --runs takes output folders of finetune-exmed-bert.py or of "
                            "a baseline's train-<name>.py")
    try:
        metrics = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{mpath}: not valid JSON ({e}); re-run that model") from None
    if not isinstance(metrics, dict) or metrics.get("format") != "exmed-bert-metrics":
        raise UserError(f"{mpath}: not an ExMed-BERT metrics file (format should be 'exmed-bert-metrics')")
    ids, patients, labels, probs = [], [], [], []
    try:
        with open(ppath, encoding="utf-8", newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:   # a row is (patient, prediction time) when the run wrote the times (MEDS labels)
                    ids.append(row["patient_id"] if row.get("prediction_time") is None
                               else f"{row['patient_id']}@{row['prediction_time']}")
                    patients.append(row["patient_id"])
                    labels.append(int(row["label"]))
                    probs.append(float(row["probability"]))
                except (KeyError, TypeError, ValueError):
                    raise UserError(f"{ppath}: line {line}: expected patient_id,label,probability") from None
    except UnicodeDecodeError:
        raise UserError(f"{ppath}: not UTF-8 text") from None
    if not ids:
        raise UserError(f"{ppath}: no predictions")
    return Run(metrics.get("model", folder.name), folder, metrics, ids, np.array(labels), np.array(probs), patients)


def align(runs: Sequence[Run]) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """Join the runs' predictions by patient_id; the test sets (and labels) must be identical."""
    ref = runs[0]
    order = {pid: i for i, pid in enumerate(ref.ids)}
    out = [ref.probs]
    for r in runs[1:]:
        if set(r.ids) != set(ref.ids):
            only_a, only_b = len(set(ref.ids) - set(r.ids)), len(set(r.ids) - set(ref.ids))
            raise UserError(f"{r.folder}/predictions.csv and {ref.folder}/predictions.csv score different test "
                            f"patients ({only_a} only in {ref.name}, {only_b} only in {r.name}); train every model "
                            "on the same --data-dir and --task-data")
        idx = np.array([order[pid] for pid in r.ids])
        labels, probs = np.empty_like(r.labels), np.empty_like(r.probs)
        labels[idx], probs[idx] = r.labels, r.probs
        if not np.array_equal(labels, ref.labels):
            raise UserError(f"{r.folder}/predictions.csv: labels differ from {ref.folder} for the same patients; "
                            "the runs used different task CSVs")
        out.append(probs)
    return ref.ids, ref.labels, out


def find_oracle(metadata_path: str | os.PathLike | None) -> tuple[float | None, str | None]:
    """The whole-cohort `oracle_auroc` from generator metadata (a .metadata.json, or a patients JSON's
    "metadata"). Context only: the report's reference is the oracle on the test patients."""
    if metadata_path is None:
        return None, None
    path = Path(metadata_path)
    candidates = [path.with_name(path.stem + ".metadata.json"), path] if path.suffix != ".jsonl" else \
        [path.with_name(path.stem + ".metadata.json")]
    for p in candidates:
        if not p.is_file():
            continue
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UserError(f"{p}: not valid JSON; pass --metadata with the generator's metadata file") from None
        value = _search(obj.get("metadata", obj) if isinstance(obj, dict) else None, "oracle_auroc")
        if value is not None:
            return float(value), str(p)
    return None, None


def _search(obj: Any, key: str, depth: int = 0) -> Any:
    if depth > 4 or not isinstance(obj, dict):
        return None
    if isinstance(obj.get(key), (int, float)):
        return obj[key]
    for v in obj.values():
        if (found := _search(v, key, depth + 1)) is not None:
            return found
    return None


def _fmt(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("value") is None:
        return "n/a"
    ci = f" [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]" if m.get("ci_low") is not None else ""
    return f"{m['value']:.{digits}f}{ci}"


def compare(run_dirs: Sequence[str | os.PathLike], output: str | os.PathLike, *, metadata: str | None = None,
            risk_file: str | os.PathLike | None = None, task_data: str | os.PathLike | None = None,
            n_bootstrap: int = 1000, seed: int = 42) -> dict:
    """Write report.md (+ report.json, roc_all.png, calibration_all.png) beside `output`; return the summary.

    The oracle comes from `risk_file`, else from `<task stem>_risk.csv` beside `task_data` or the task
    CSV the runs recorded; without one the report says there is no oracle.
    """
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):  # two runs of the same model type: tell them apart by folder
        for r in runs:
            r.name = f"{r.name} ({r.folder.name})"
    if any(r.metrics.get("task") != "binary" for r in runs):
        raise UserError("compare-models.py compares binary tasks; a multi-class run's metrics.json has macro "
                        "metrics only - compare those by hand")
    ids, y, probs = align(runs)
    patients = runs[0].patients or ids   # each row's patient (a row is a (patient, prediction time) pair)
    risk_path, looked = find_risk_file([r.folder for r in runs], risk_file, task_data)
    oracle = (oracle_on_test_split(risk_path, patients, y, probs, [r.name for r in runs], n_bootstrap, seed)
              if risk_path is not None else None)
    cohort_oracle, cohort_src = find_oracle(metadata)
    deltas = []
    groups = M.patient_groups(patients)   # a patient's rows (prediction times) are resampled together
    for (i, a), (j, b) in combinations(enumerate(runs), 2):
        d = M.paired_auroc_delta(y, probs[i], probs[j], n_bootstrap=n_bootstrap, seed=seed, groups=groups)
        deltas.append({"a": a.name, "b": b.name, **d})
    out = Path(output)
    folder = out.parent
    curves = {r.name: (y, p) for r, p in zip(runs, probs)}
    plots.plot_roc(curves, folder / "roc_all.png", title="ROC on the shared test patients")
    plots.plot_calibration(curves, folder / "calibration_all.png", title="Calibration on the shared test patients")
    n_pos = int(y.sum())
    summary = {"n_test": len(ids), "n_test_patients": len(set(patients)),
               "n_test_without_history": rows_without_history(runs), "n_positive": n_pos,
               "n_negative": len(ids) - n_pos, "prevalence": float(y.mean()),
               "oracle": oracle, "oracle_auroc": None if oracle is None else oracle["auroc"],
               "oracle_note": None if oracle is not None else no_oracle_note(looked),
               "cohort_oracle_auroc": cohort_oracle, "cohort_oracle_source": cohort_src,
               "task_data": None if task_data is None else str(task_data),
               "models": {r.name: {"folder": str(r.folder), "inputs": r.metrics.get("inputs"),
                                   **{k: r.metrics["metrics"].get(k) for k in ("auroc", "auprc", "f1", "brier", "ece")}}
                          for r in runs},
               "paired_delta_auroc": deltas, "verdict": verdict(runs, deltas, oracle, y),
               "n_bootstrap": n_bootstrap, "seed": seed}
    write_text(out, render(summary, runs))
    write_json(out.with_suffix(".json"), summary)
    return summary


def run(args: CompareArgs) -> dict:
    """The report stage: report.md, report.json and the plots beside `args.output`; prints the verdict."""
    if not args.runs:
        raise UserError("--runs needs at least one output folder")
    summary = compare(args.runs, args.output, metadata=args.metadata, risk_file=args.risk_file,
                      task_data=args.task_data, n_bootstrap=args.n_bootstrap, seed=args.seed)
    for line in summary["verdict"] + ([summary["oracle_note"]] if summary["oracle_note"] else []):
        print(line)
    print(f"wrote {args.output} (+ {Path(args.output).with_suffix('.json').name}, roc_all.png, calibration_all.png)")
    return summary


def rows_without_history(runs: Sequence[Run]) -> int | None:
    """Test rows with no event before their prediction time (metrics.json's `n_without_history`; the runs
    share their test rows, so the first run that knows it says it), or None from runs that predate it."""
    known = [r.metrics.get("n_without_history") for r in runs if r.metrics.get("n_without_history") is not None]
    return known[0] if known else None


def no_oracle_note(looked: Sequence[Path]) -> str:
    where = f" (looked for {', '.join(map(str, looked))})" if looked else ""
    return ("No oracle: there is no per-patient true-risk file for these runs" + where + ". Real data has "
            "none, so there is no ceiling to measure the models against; for generated data, regenerate "
            "it (the generator writes <task stem>_risk.csv) or pass --risk-file.")


# Fewer test rows than this in either class: AUROCs and their bootstrap CIs say little (a single
# positive gives zero-width CIs), so the report gives no verdict between models.
MIN_PER_CLASS = 5


def verdict(runs: Sequence[Run], deltas: list[dict], oracle: dict | None = None,
            y: np.ndarray | None = None) -> list[str]:
    """Plain sentences: the best model by AUROC, each pair's significant win or loss, where each model
    stands against the test-split oracle; or, on a test split with fewer than MIN_PER_CLASS rows of a
    class, that it is too small to compare on."""
    auc = {r.name: r.metrics["metrics"]["auroc"]["value"] for r in runs}
    scored = {k: v for k, v in auc.items() if v is not None}
    lines = []
    if not scored:
        return ["No AUROC could be computed: the test split has a single class. Use more patients."]
    n_pos = int(np.sum(y)) if y is not None else MIN_PER_CLASS
    n_neg = len(y) - n_pos if y is not None else MIN_PER_CLASS
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        return [f"No verdict: the test split holds {n_pos} positive and {n_neg} negative rows, fewer than "
                f"{MIN_PER_CLASS} of a class, too few to tell models apart (AUROCs below are for the record). "
                "Use more patients or a larger test split."]
    best = max(scored, key=scored.get)
    lines.append(f"Highest test AUROC: {best} ({scored[best]:.3f}).")
    for d in deltas:
        if d["ci_low"] is None:
            continue
        if d["ci_low"] > 0:
            lines.append(f"{d['a']} beats {d['b']}: ΔAUROC {d['delta_auroc']:+.3f} "
                         f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}].")
        elif d["ci_high"] < 0:
            lines.append(f"{d['a']} loses to {d['b']}: ΔAUROC {d['delta_auroc']:+.3f} "
                         f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}].")
        else:
            lines.append(f"{d['a']} vs {d['b']}: no clear difference (ΔAUROC {d['delta_auroc']:+.3f}, 95% CI "
                         f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] includes 0).")
    if scored and oracle is not None and oracle["auroc"] is not None:
        for name, g in oracle["gaps"].items():
            if g["ci_low"] is not None:
                lines.append(f"{name} is {g['standing']} (gap {g['gap']:+.3f} [{g['ci_low']:+.3f}, "
                             f"{g['ci_high']:+.3f}] to the test-split oracle {oracle['auroc']:.3f}).")
    for name, v in scored.items():
        if v < 0.45:
            lines.append(f"Warning: {name} ranks worse than chance (AUROC {v:.3f}): its scores run against the "
                         "labels, which points to inverted labels or a bug, not a result.")
        elif v < 0.55:
            lines.append(f"Warning: {name} is near chance (AUROC {v:.3f}); on data with planted signal that "
                         "points to a bug or an untrained model, not a result.")
    return lines


def render(summary: dict, runs: Sequence[Run]) -> str:
    n, prev = summary["n_test"], summary["prevalence"]
    n_patients = summary.get("n_test_patients", n)
    split = (f"{n} patients" if n_patients == n else f"{n} rows from {n_patients} patients (a row per prediction "
             "time; each resample draws a patient with all of its rows)")
    k = summary.get("n_test_without_history")
    if k is not None:   # rows the task keeps with no history: scored from age and sex alone
        split += f", {k} of them with no event before their prediction time (scored from age and sex)"
    lines = ["# Model comparison", "",
             f"Test split: {split}, prevalence {prev:.3f}. 95% CIs from {summary['n_bootstrap']} bootstrap "
             "resamples of the test patients. F1 is at the threshold that maximised F1 on the validation split.", ""]
    lines += [*render_oracle(summary), "## Verdict", "", *[f"- {s}" for s in summary["verdict"]], "",
              "## Test metrics", "",
              "| Model | AUROC [95% CI] | AUPRC [95% CI] | F1 [95% CI] | Brier | ECE | n train | inputs |",
              "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        m = r.metrics["metrics"]
        lines.append(f"| {r.name} | {_fmt(m.get('auroc'))} | {_fmt(m.get('auprc'))} | {_fmt(m.get('f1'))} | "
                     f"{_fmt({'value': (m.get('brier') or {}).get('value')})} | "
                     f"{_fmt({'value': (m.get('ece') or {}).get('value')})} | {r.metrics.get('n_train', 'n/a')} | "
                     f"{r.metrics.get('inputs', 'n/a')} |")
    lines += ["", "## Paired ΔAUROC (same test patients, same resamples)", "",
              "| A | B | AUROC(A) - AUROC(B) | 95% CI | bootstrap p |", "|---|---|---|---|---|"]
    for d in summary["paired_delta_auroc"]:
        ci = f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d["ci_low"] is not None else "n/a"
        p = f"{d['p_value']:.3f}" if d["p_value"] is not None else "n/a"
        delta = f"{d['delta_auroc']:+.3f}" if d["delta_auroc"] is not None else "n/a (one-class test set)"
        lines.append(f"| {d['a']} | {d['b']} | {delta} | {ci} | {p} |")
    lines += ["", "## Plots", "", "![ROC curves](roc_all.png)", "", "![Calibration](calibration_all.png)", "",
              "## Runs", "", *[f"- {r.name}: `{r.folder}`" for r in runs], ""]
    return "\n".join(lines)


def render_oracle(summary: dict) -> list[str]:
    """The oracle section: the true risk's AUROC on the compared test patients and each model's paired
    gap to it, or a plain statement that there is no oracle."""
    o = summary.get("oracle")
    if o is None:
        return ["## Oracle", "", summary.get("oracle_note") or "No oracle: no per-patient true-risk file.", ""]
    if o["auroc"] is None:
        return ["## Oracle", "", f"No oracle AUROC: the {o['n']} test patients hold a single class.", ""]
    rows = (f"{o['n']} compared test patients" if o.get("n_patients", o["n"]) == o["n"]
            else f"{o['n']} compared test rows ({o['n_patients']} patients)")
    lines = ["## Oracle (the generator's true risk, on the same test patients)", "",
             f"Oracle AUROC on the {rows}: **{o['auroc']:.3f}** "
             f"[{o['ci_low']:.3f}, {o['ci_high']:.3f}], from `{o['risk_file']}`. No model beats it on average; "
             "on one test split a model may by chance. The AUROCs and gaps below use the same bootstrap "
             "resamples as the paired ΔAUROC, so each gap (model - oracle) has a paired 95% CI; a model is "
             "within sampling noise of the oracle when that CI includes 0.", ""]
    if summary.get("cohort_oracle_auroc") is not None:
        lines += [f"(The generator's metadata gives {summary['cohort_oracle_auroc']:.3f} over the whole "
                  "cohort; that is context only, not the reference for a test-split score.)", ""]
    lines += ["| Model | AUROC [95% CI] | gap to oracle [95% CI] | bootstrap p | where it stands |",
              "|---|---|---|---|---|"]
    for name, g in o["gaps"].items():
        gap = "n/a" if g["ci_low"] is None else f"{g['gap']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]"
        p = "n/a" if g["p_value"] is None else f"{g['p_value']:.3f}"
        lines.append(f"| {name} | {_fmt(g['auroc'])} | {gap} | {p} | {g['standing']} |")
    return [*lines, ""]
