"""Generate a whole cohort: chunks of simulated patients streamed to disk (patients, task CSV, per-patient
true risk), and the metadata that describes them (parameters, counts, history-length distribution, novel
rate, task prevalence, whole-cohort oracle). `run(GenerateArgs)` is the stage.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from exmed_bert.errors import UserError
from exmed_bert.io import write_run_info
from exmed_bert.synthetic import modules as m
from exmed_bert.synthetic import task
from exmed_bert.synthetic.args import GenerateArgs
from exmed_bert.synthetic.embedding_vocab import embedding_vocabulary
from exmed_bert.synthetic.generator import CHUNK_SIZE, LOS_CAP_DAYS, NovelController, Window, simulate_chunk
from exmed_bert.synthetic.tables import CodeTables
from exmed_bert.synthetic import trajectory_risk as tr
from exmed_bert.synthetic.code_space import trajectory_tables
from exmed_bert.synthetic.processes import PROCESSES
from exmed_bert.synthetic.trajectory import intercept_for, simulate_trajectory_chunk
from exmed_bert.synthetic.trajectory_risk import DEFAULT_PREVALENCE
from exmed_bert.synthetic.writer import ChunkFormatter, PatientStream, metadata_path, risk_path

GENERATOR_VERSION = "1.0"
MUST_NOT_SEE = ("Any event on or after the patient's prediction_date: histories continue past it and "
                "include the outcome itself (the heart-failure admission with its I50.x codes, 99223, "
                "echo 93306, BNP 83880, the furosemide fill at discharge, the follow-up visit). "
                "Cut every history at the prediction date before training or featurising.")
PERCENTILES = (5, 25, 50, 75, 95, 99)


@dataclass(frozen=True)
class Params:
    num_patients: int
    novel_prob: float
    seed: int
    start_date: str          # ISO, first day of the history window
    end_date: str            # ISO, last day of the history window
    task_horizon_days: int
    clinvec_dir: str | None = None
    task: str = "hf"         # the planted task: "hf", "temporal" or "trajectory" (exmed_bert.synthetic.task)
    task_prevalence: float | None = None   # trajectory only: calibrated prevalence (None: its default)


def _epoch_day(iso: str) -> int:
    return (dt.date.fromisoformat(iso) - dt.date(1970, 1, 1)).days


def window_for(p: Params) -> Window:
    start = _epoch_day(p.start_date)
    days = _epoch_day(p.end_date) - start + 1
    return Window(start=start, days=days, horizon=p.task_horizon_days,
                  min_history=min(730, (days - p.task_horizon_days) // 2))


def generate(p: Params, output: str, task_output: str, progress: bool = True) -> dict:
    """Simulate `p.num_patients` patients into `output` (+ `task_output` and its `<stem>_risk.csv`);
    returns the metadata."""
    vocab, source = embedding_vocabulary(p.clinvec_dir)
    trajectory = p.task == "trajectory"
    tables = trajectory_tables(vocab) if trajectory else CodeTables(vocab)
    prevalence = DEFAULT_PREVALENCE if p.task_prevalence is None else p.task_prevalence
    win = window_for(p)
    fmt = ChunkFormatter(tables, win.start, win.days + LOS_CAP_DAYS + 1, p.num_patients)
    novel = NovelController(p.novel_prob)
    N = p.num_patients
    lengths = np.zeros(N, dtype=np.int32)                 # codes per patient
    prob, label = np.zeros(N), np.zeros(N, dtype=np.int8)
    kind_counts = np.zeros(3, dtype=np.int64)
    los_hist = np.zeros(LOS_CAP_DAYS + 1, dtype=np.int64)
    plos = np.zeros(N, dtype=bool)
    has_stay = np.zeros(N, dtype=bool)
    cond_counts = np.zeros(len(PROCESSES if trajectory else m.CONDITIONS), dtype=np.int64)
    code_counts = np.zeros(len(tables.codes), dtype=np.int64)   # trajectory: the code space's width

    with PatientStream(output, task_output) as stream, \
            tqdm(total=N, unit="patients", desc="generating", disable=not progress or None) as bar:
        for k, lo in enumerate(range(0, N, CHUNK_SIZE)):
            n = min(CHUNK_SIZE, N - lo)
            rng = np.random.default_rng([p.seed, k])
            if trajectory:
                ch = simulate_trajectory_chunk(rng, n, win, tables, novel, prevalence)
                code_counts += np.bincount(ch.gid, minlength=len(tables.codes))
            else:
                ch = simulate_chunk(rng, n, win, tables, novel, task_kind=p.task)
            stream.write(*fmt.format(ch, lo))
            b = ch.bounds
            lengths[lo:lo + n] = b[3::3] - b[:-1:3]
            kind_counts += np.diff(b).reshape(n, 3).sum(axis=0)
            prob[lo:lo + n], label[lo:lo + n] = ch.prob, ch.label
            los = ch.dis - ch.adm
            los_hist += np.bincount(los, minlength=LOS_CAP_DAYS + 1)
            stay_pat = np.repeat(np.arange(n), np.diff(ch.stay_bounds))
            has_stay[lo:lo + n] = np.diff(ch.stay_bounds) > 0
            plos[lo + stay_pat[los >= 7]] = True
            cond_counts += ch.has.sum(axis=1)
            bar.update(n)
        meta = _metadata(p, source, len(vocab), novel, lengths, kind_counts, prob, label, los_hist,
                         has_stay, plos, cond_counts)
        if trajectory:
            meta["task"]["risk_function"] = _trajectory_risk_function(intercept_for(win, prevalence), prevalence)
            meta["process_prevalence"] = meta.pop("condition_prevalence")
            meta["code_space"] = code_space_summary(tables, code_counts)
        stream.finish(meta)
    return meta


def _parameters(p: Params) -> dict:
    """The parameters as written; task_prevalence only where it applies, so hf and temporal files keep
    their bytes."""
    out = asdict(p)
    if p.task != "trajectory":
        del out["task_prevalence"]
    elif p.task_prevalence is None:
        out["task_prevalence"] = DEFAULT_PREVALENCE
    return out


def _trajectory_risk_function(intercept: float, prevalence: float) -> dict:
    return {"form": "sigmoid(intercept + terms of the latent state at the prediction date); "
                    "docs/SYNTHETIC_DATA_GUIDE.md, 'The trajectory task'",
            "intercept": intercept, "calibrated_to_prevalence": prevalence,
            "stage_weights": {k: list(v) for k, v in tr.STAGE_WEIGHTS.items()},
            "recent_progression": dict(tr.RECENT_PROGRESSION), "recent_days": tr.RECENT_DAYS,
            "treated_after_diagnosis": dict(tr.TREATED_AFTER_DIAGNOSIS), "weights": dict(tr.WEIGHTS),
            "new_onset_days": tr.NEW_ONSET_DAYS}


def code_space_summary(tables: CodeTables, counts: np.ndarray) -> dict:
    """How wide and long-tailed the written codes are: distinct codes per system, how many are rare."""
    seen = counts > 0
    systems = np.array(tables.systems)
    return {"distinct_codes": int(seen.sum()),
            "distinct_by_system": {s: int((seen & (systems == s)).sum()) for s in ("icd10cm", "atc", "cpt")},
            "codes_seen_under_10_times": int(((counts > 0) & (counts < 10)).sum()),
            "codes_seen_once": int((counts == 1).sum()),
            "share_of_events_in_top_100_codes": round(float(np.sort(counts)[::-1][:100].sum() / max(counts.sum(), 1)),
                                                      6)}


def _risk_function(kind: str) -> dict:
    if kind == "temporal":
        return {"form": "sigmoid(intercept + sum(weight * feature)); features in docs/SYNTHETIC_DATA_GUIDE.md",
                "intercept": task.TEMPORAL_INTERCEPT, "weights": dict(task.TEMPORAL_WEIGHTS),
                "recent_days": task.RECENT_DAYS, "acute_risk_conditions": list(task.ACUTE_RISK_CONDITIONS)}
    return {"form": "sigmoid(intercept + sum(weight * feature))", "intercept": task.INTERCEPT,
            "weights": dict(task.WEIGHTS)}


def _pct(values: np.ndarray) -> dict:
    q = np.percentile(values, PERCENTILES)
    return {"mean": round(float(values.mean()), 2),
            **{f"p{p}": round(float(v), 1) for p, v in zip(PERCENTILES, q)}, "max": int(values.max())}


def _metadata(p, source, vocab_size, novel, lengths, kind_counts, prob, label, los_hist, has_stay, plos,
              cond_counts) -> dict:
    N = p.num_patients
    n_stays = int(los_hist.sum())
    los_cum = np.cumsum(los_hist)
    return {
        "generator": "exmed_bert.synthetic",
        "version": GENERATOR_VERSION,
        "seed": p.seed,
        "parameters": _parameters(p),
        "counts": {"patients": N, "diagnoses": int(kind_counts[0]), "prescriptions": int(kind_counts[1]),
                   "procedures": int(kind_counts[2]), "hospitalizations": n_stays,
                   "codes": int(kind_counts.sum())},
        "codes_per_patient": _pct(lengths),
        "novel_codes": {
            "target": p.novel_prob,
            "realised_rate": round(novel.novel / max(novel.total, 1), 6),
            "novel": novel.novel, "diagnosis_and_drug_codes": novel.total,
            "embedding_vocabulary": source, "embedding_vocabulary_size": vocab_size,
        },
        "task": {
            "name": "heart_failure_hospitalisation" + ("" if p.task == "hf" else f" ({p.task} risk)"),
            "kind": p.task,
            "definition": f"an admission with an I50.x diagnosis within {p.task_horizon_days} days after "
                          "prediction_date (exclusive of the date itself)",
            "horizon_days": p.task_horizon_days,
            "prevalence": round(float(label.mean()), 6),
            "mean_true_risk": round(float(prob.mean()), 6),
            # Over the whole cohort. A report scores models on a test split, so compare-models.py recomputes
            # the oracle on exactly those patients from the per-patient risk file.
            "oracle_auroc": None if (a := task.oracle_auroc(prob, label)) is None else round(a, 6),
            "oracle_auroc_patients": "whole cohort",
            "true_risk_file": "<task stem>_risk.csv beside the task CSV (patient_id,true_risk)",
            "risk_function": _risk_function(p.task),
            "must_not_see": MUST_NOT_SEE,
        },
        "hospital_stays": {
            "patients_with_a_stay": round(float(has_stay.mean()), 6),
            "patients_with_a_stay_of_7_days_or_more": round(float(plos.mean()), 6),
            "length_of_stay_days": ({"p50": int(np.searchsorted(los_cum, 0.5 * n_stays)),
                                     "p90": int(np.searchsorted(los_cum, 0.9 * n_stays)),
                                     "max": int(np.flatnonzero(los_hist)[-1])} if n_stays else None),
        },
        "condition_prevalence": {c.name: round(float(k) / N, 6)
                                 for c, k in zip(PROCESSES if p.task == "trajectory" else m.CONDITIONS, cond_counts)},
    }


def check_writable(path: str, flag: str) -> None:
    """Fail fast, before minutes of generation, when `path` cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file path such as {p / 'synthetic_patients.json'}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p.parent):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write there ({e.strerror or e}); choose another path") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{flag} {path}: the file exists and is read-only; choose another path")


def run(args: GenerateArgs) -> dict:
    """The generator stage: patients, task CSV and true risks written, run_config beside them; returns
    the metadata."""
    if Path(args.output).resolve() == risk_path(args.task_output).resolve():
        raise UserError(f"--output {args.output} is where the true risks of --task-output {args.task_output} "
                        "go; give another --output")
    check_writable(args.output, "--output")
    check_writable(args.task_output, "--task-output")
    params = Params(num_patients=args.num_patients, novel_prob=args.novel_prob, seed=args.seed,
                    start_date=args.start_date, end_date=args.end_date,
                    task_horizon_days=args.task_horizon_days, clinvec_dir=args.clinvec_dir, task=args.task,
                    task_prevalence=args.task_prevalence)
    try:
        meta = generate(params, args.output, args.task_output)
    except OSError as e:  # disk full, path vanished mid-run: the atomic writes left nothing partial
        raise UserError(f"{e.filename or args.output}: write failed ({e.strerror or e})") from None
    out = Path(args.output)
    # versions and git commit live beside the data, not in it, so the data stays byte-identical per seed
    write_run_info(out.parent, args, name=f"{out.stem}_run_config.json")
    t, nc, cp = meta["task"], meta["novel_codes"], meta["codes_per_patient"]
    where = f"{args.output}" + (f" (+ {metadata_path(args.output)})" if args.output.lower().endswith(".jsonl") else "")
    print(f"wrote {args.num_patients} patients to {where}: median {cp['p50']:g} codes per patient "
          f"(p95 {cp['p95']:g}); novel codes {nc['realised_rate']:.2%} (target {nc['target']:.2%}); "
          f"task {args.task_output}: prevalence {t['prevalence']:.1%}, whole-cohort oracle AUROC "
          f"{'n/a' if t['oracle_auroc'] is None else format(t['oracle_auroc'], '.3f')}; "
          f"true risk per patient in {risk_path(args.task_output)}")
    return meta
