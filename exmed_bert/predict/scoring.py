"""`predict-exmed-bert.py`, top to bottom: a fine-tuned checkpoint and its run's decisions (threshold,
truncation) -> the task datasets fine-tuning read -> P(label) per row of the chosen split -> MEDS
predictions.parquet (subject_id, prediction_time, boolean_value, predicted_boolean_value,
predicted_boolean_probability), the same writer fine-tuning uses for its test split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from transformers.utils import logging as hf_logging

from exmed_bert.data.collate import uses_time
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError
from exmed_bert.evaluation.outputs import write_meds_predictions
from exmed_bert.model.modeling import ExMedBertForSequenceClassification
from exmed_bert.predict.args import PredictArgs
from exmed_bert.tasks import load_task_splits, task_prediction_times
from exmed_bert.training.callbacks import BEST_DIR
from exmed_bert.training.finetune import TruncatedDataset, predict_probs
from exmed_bert.training.runtime import resolve_device

DEFAULT_MAX_LENGTH = 512  # FinetuneArgs.max_length, for a run that recorded none


def find_finetuned(path: str | Path) -> tuple[Path, Path]:
    """(checkpoint folder, fine-tuning run folder) for a checkpoint-best folder or the run folder holding it."""
    path = Path(path)
    hint = "pass --model-path with the checkpoint-best folder of finetune-exmed-bert.py"
    if not path.is_dir():
        raise UserError(f"{path}: model folder not found; {hint}")
    if not (path / "config.json").is_file() and (path / BEST_DIR / "config.json").is_file():
        path = path / BEST_DIR
    for name in ("config.json", "model.safetensors", "vocab.json"):
        if not (path / name).is_file():
            raise UserError(f"{path}: no {name} (not a complete model folder); {hint}")
    return path, path.parent


def run_record(run_dir: Path, name: str) -> dict:
    """A JSON file the fine-tuning run wrote ({} when absent); unreadable is an error naming it."""
    path = run_dir / name
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read it ({type(e).__name__}); pass --threshold and --max-length "
                        "to do without it") from None


def resolve_threshold(args: PredictArgs, model_dir: Path, run_dir: Path) -> tuple[float, str]:
    """The decision threshold and where it came from: --threshold, else metrics.json's (chosen on val by
    fine-tuning), looked for in the checkpoint folder and then in the run folder."""
    if args.threshold is not None:
        return float(args.threshold), "--threshold"
    for folder in (model_dir, run_dir):
        value = run_record(folder, "metrics.json").get("threshold")
        if isinstance(value, (int, float)):
            return float(value), str(folder / "metrics.json")
    raise UserError(f"{model_dir}: no metrics.json with a threshold beside the model (fine-tuning writes one in "
                    f"its output folder); pass --threshold")


def load_finetuned(path: Path):
    """The classifier exactly as fine-tuning saved it; a model without a trained head is refused."""
    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()   # transformers' per-tensor "Loading weights" bar on stderr
    try:
        model, info = ExMedBertForSequenceClassification.from_pretrained(path, use_safetensors=True,
                                                                         output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise UserError(f"{path}: cannot load the model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()
    if info.get("missing_keys"):
        raise UserError(f"{path}: no trained classification head (a pretrained model, not a fine-tuned one); "
                        "fine-tune it with finetune-exmed-bert.py and pass its checkpoint-best")
    if model.config.num_labels != 2:
        raise UserError(f"{path}: the model has {model.config.num_labels} classes; MEDS predictions are binary")
    return model.eval()


def run(args: PredictArgs) -> dict:
    """Score the chosen split and write predictions.parquet; returns a summary (rows, subjects, threshold)."""
    model_dir, run_dir = find_finetuned(args.model_path)
    model = load_finetuned(model_dir)
    threshold, threshold_from = resolve_threshold(args, model_dir, run_dir)
    recorded = run_record(run_dir, "run_config.json").get("args", {})
    max_length = args.max_length or int(recorded.get("max_length") or DEFAULT_MAX_LENGTH)
    device = resolve_device(args.device)
    out = Path(args.output)
    # the same reader as fine-tuning: labels checked against the task datasets, bad rows counted as skips
    splits, _, source = load_task_splits(args.data_dir, args.task_data, num_labels=2, output_dir=out.parent,
                                         on_error="skip", vocab=Vocab.load(model_dir / "vocab.json"))
    ids, times, labels, probs = [], [], [], []
    for name in args.splits:
        ds = splits[name]
        if len(ds) == 0:
            continue
        data = TruncatedDataset(ds, max_length, with_days=uses_time(model.config))   # as fine-tuning does
        probs.append(predict_probs(model, data, args.batch_size, device)[:, 1])    # (N,) P(label 1)
        # one rule for prediction times, fine-tuning's: task_prediction_times reads a "test" task dataset
        one = {**source, "task_datasets": {"test": source["task_datasets"][name]}}
        t = task_prediction_times(one, list(ds.patient_ids))
        if t is None:
            raise UserError(f"{source['task_datasets'][name]}: no prediction times; re-run the conversion with "
                            "--task-data to rebuild the task datasets")
        ids += list(ds.patient_ids)
        times.append(t)
        labels.append(ds.data["labels"].numpy())
    if not ids:
        raise UserError(f"{args.task_data}: no task rows in the {args.split} split of {args.data_dir}; "
                        "choose another --split")
    p = np.concatenate(probs)
    if not write_meds_predictions(out, ids, np.concatenate(times), np.concatenate(labels), p, threshold):
        raise UserError(f"{args.task_data}: the task's patient ids have no MEDS subject id (an integer, or letters "
                        "then a number such as P0042); MEDS predictions need integer subject ids")
    summary = {"rows": len(ids), "subjects": len(set(ids)), "split": args.split, "threshold": threshold,
               "threshold_from": threshold_from, "task_rows_rejected": source["task_rows_rejected"]}
    print(f"{args.split}: {len(ids):,} rows from {len(set(ids)):,} subjects scored with {model_dir}; "
          f"{int((p >= threshold).sum()):,} predicted true at threshold {threshold:.4g} ({threshold_from}) -> {out}"
          + (f"; {source['task_rows_rejected']:,} of {source['task_rows']:,} task rows (all splits) not scorable, "
             f"listed in {out.parent / 'task_rejected.csv'}" if source["task_rows_rejected"] else ""))
    return summary
