"""Fine-tuning run, top to bottom: task splits -> pretrained encoder + new head -> Trainer on train,
model selection on val -> checkpoint-best/ -> metrics, predictions and plots on TEST only.

`run(args)` takes the stage's `FinetuneArgs`. Under torchrun every rank
trains; only rank 0 writes files and scores the test split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from transformers import TrainerCallback, set_seed
from transformers.utils import logging as hf_logging

from exmed_bert.clinvec.init import COVERAGE_FILE
from exmed_bert.data.collate import Collator, reference_days, uses_time
from exmed_bert.data.dataset import SEQ_KEYS
from exmed_bert.data.sampler import make_sampler
from exmed_bert.data.splits import find_pretraining
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError
from exmed_bert.evaluation import metrics as M
from exmed_bert.evaluation.outputs import evaluate_and_write, format_summary
from exmed_bert.io import write_run_info, write_text
from exmed_bert.model.architecture import preset_for_hidden_size
from exmed_bert.model.modeling import ExMedBertForSequenceClassification
from exmed_bert.tasks import check_labels, load_task_splits
from exmed_bert.training import distributed
from exmed_bert.training.args import FinetuneArgs, check_freezing, resolve_learning_rate
from exmed_bert.training.callbacks import BEST_DIR, BestModelCallback, VocabCallback
from exmed_bert.training.freezing import FreezeEncoder, freeze_for_finetuning
from exmed_bert.training.mlflow_tracking import MlflowLogger
from exmed_bert.training.runtime import build_training_arguments, resolve_checkpoint, resolve_device
from exmed_bert.training.teelog import TeeLog
from exmed_bert.training.trainer import ExMedTrainer


# ---------------------------------------------------------------------------------------------
# pieces


class TruncatedDataset(torch.utils.data.Dataset):
    """A PatientDataset view keeping [CLS] + the most recent `max_length - 1` tokens of each patient,
    with visit positions renumbered from 1 so they stay inside the model's position table.
    `with_days`: items also carry `days` (cut like the tokens), `reference_day` (the prediction date) and
    `birth_day`, which a Collator with time needs (`with_days=collate.uses_time(model.config)`).

    It has no `offsets`, so the collator builds batches from these truncated items, never from the flat
    token arrays of `data` (exmed_bert.data.collate.batched_view)."""

    def __init__(self, ds, max_length: int, with_days: bool = False):
        self.ds, self.max_length = ds, int(max_length)
        self.lengths = np.minimum(ds.lengths, self.max_length)
        self.patient_ids, self.data, self.path = ds.patient_ids, ds.data, ds.path
        self.keys = (*SEQ_KEYS, "days") if with_days else SEQ_KEYS
        self.reference = reference_days(ds.data, ds.offsets, np.arange(len(ds))) if with_days else None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        item = self.ds[i]
        if self.reference is not None:
            s, e = int(self.ds.offsets[item["index"]]), int(self.ds.offsets[item["index"] + 1])
            item["days"], item["reference_day"] = self.ds.data["days"][s:e], int(self.reference[item["index"]])
            item["birth_day"] = int(self.ds.data["birth_days"][item["index"]])
        n = len(item["input_ids"])
        if n <= self.max_length:
            return item
        keep = n - (self.max_length - 1)  # first kept token after [CLS]
        for k in self.keys:
            item[k] = torch.cat([item[k][:1], item[k][keep:]])
        pos = item["position_ids"].long()
        pos[1:] -= int(pos[1]) - 1
        item["position_ids"] = pos
        return item


class ClassificationMetrics:
    """Validation accumulator for ExMedTrainer: loss, AUROC, AUPRC and F1 (at val's best cut)."""

    def __init__(self):
        self.probs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.loss, self.n = 0.0, 0

    def update(self, out: Any, batch: dict) -> None:
        self.probs.append(torch.softmax(out.logits.float(), dim=-1).cpu())  # (B, K)
        self.labels.append(batch["labels"].cpu())
        b = int(batch["labels"].shape[0])
        self.loss += float(out.loss.float()) * b
        self.n += b

    def reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (self.probs, self.labels, self.loss, self.n))
            self.probs = [p for part in parts for p in part[0]]
            self.labels = [y for part in parts for y in part[1]]
            self.loss, self.n = sum(p[2] for p in parts), sum(p[3] for p in parts)

    def compute(self, prefix: str = "eval") -> dict[str, float]:
        P, y = torch.cat(self.probs).numpy(), torch.cat(self.labels).numpy()
        out = {f"{prefix}_loss": self.loss / self.n if self.n else math.nan}
        if len(np.unique(y)) < 2:
            return out  # AUROC undefined on a one-class validation set
        if P.shape[1] == 2:
            cut = M.choose_threshold(y, P[:, 1])
            for name in ("auroc", "auprc", "f1"):
                out[f"{prefix}_{name}"] = M.headline_metric(name, y, P, cut)
        else:
            for name in ("auroc", "f1"):
                out[f"{prefix}_{name}"] = M.headline_metric(name, y, P)
        return out


class EarlyStopping(TrainerCallback):
    """Stop when `metric` has not improved for `patience` evaluations (0 = never)."""

    def __init__(self, metric: str, greater_is_better: bool, patience: int):
        self.metric, self.greater, self.patience = metric, greater_is_better, patience
        self.best: float | None = None
        self.bad = 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if self.patience <= 0 or value is None or not math.isfinite(value):
            return
        if self.best is None or (value > self.best if self.greater else value < self.best):
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                print(f"early stopping: {self.metric} has not improved for {self.bad} evaluations")
                control.should_training_stop = True


def check_model_folder(path: str | Path) -> Path:
    path = Path(path)
    hint = "pass --model-path with a checkpoint-best folder written by pretraining"
    if not path.is_dir():
        raise UserError(f"{path}: model folder not found; {hint}")
    if not (path / "config.json").is_file() and (path / "checkpoint-best" / "config.json").is_file():
        print(f"note: {path} is a pretraining output folder; using its best model, {path / 'checkpoint-best'}")
        path = path / "checkpoint-best"
    for name in ("config.json", "model.safetensors", "vocab.json"):
        if not (path / name).is_file():
            raise UserError(f"{path}: no {name} (incomplete checkpoint); {hint}")
    return path


def load_classifier(path: Path, num_labels: int, quiet: bool = False, attn_implementation: str = "sdpa"):
    """The classifier with the checkpoint's encoder. Instead of transformers' key-by-key load report, one
    note: a pretraining checkpoint lacks exactly the new head (and has MLM/PLOS heads it drops). A
    checkpoint missing anything else (encoder weights) is refused."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = ExMedBertForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, use_safetensors=True, output_loading_info=True,
            attn_implementation=attn_implementation)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise UserError(f"{path}: cannot load the model ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    finally:
        hf_logging.set_verbosity(level)
    missing = sorted(info.get("missing_keys", []))
    other = [k for k in missing if not k.startswith("classifier.")]
    if other:
        raise UserError(f"{path}: the checkpoint lacks {len(other)} encoder weight(s) ({', '.join(other[:3])}...); "
                        "pass a checkpoint-best folder written by pretraining or fine-tuning")
    if missing and not quiet:
        dropped = sorted({k.split(".")[0] for k in info.get("unexpected_keys", [])})
        print(f"note: encoder loaded from {path}; new classification head initialised ({len(missing)} tensors)"
              + (f"; pretraining heads not used: {', '.join(dropped)}" if dropped else ""))
    return model


@torch.no_grad()
def predict_probs(model, ds, batch_size: int, device: str) -> np.ndarray:
    """(N, K) softmax probabilities in dataset order."""
    model.to(device).eval()
    collate = Collator.for_model(model.config, mlm=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    out = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        out.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu())
    return torch.cat(out).numpy()


# ---------------------------------------------------------------------------------------------
# the run


def run(args: FinetuneArgs) -> dict:
    """The whole run; returns the test metrics document (rank 0) or {} (other ranks)."""
    main = distributed.is_main_process()
    out = Path(args.output_dir)
    model_dir = check_model_folder(args.model_path)
    resolve_device(args.device)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    with TeeLog(out / "training.log", enabled=main):
        return _run(args, out, model_dir, main)


def check_token_types(splits: dict, type_vocab_size: int, model_dir: Path) -> None:
    """Refuse task data whose token types the model has no row for (type 4: other codes, kept by
    `--other-codes keep`, in a model pretrained without them)."""
    top = max((int(d.data["token_type_ids"].max()) for d in splits.values() if len(d.data["token_type_ids"])),
              default=0)
    if top >= type_vocab_size:
        raise UserError(f"{model_dir}: the task data has token type {top} (other codes, from --other-codes keep) but "
                        f"the model has {type_vocab_size} token types; pretrain on a conversion with the same "
                        "--other-codes, or convert the task data with --other-codes drop")


def _run(args: FinetuneArgs, out: Path, model_dir: Path, main: bool) -> dict:
    hf_logging.set_verbosity_warning()
    device = resolve_device(args.device)
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, out)
    vocab = Vocab.load(model_dir / "vocab.json")
    # the split is the conversion's (--split-seed only when none is recorded), never the training --seed
    pretraining, unknown = find_pretraining(model_dir)
    if unknown and main:
        print(f"note: {unknown}; the task split cannot be checked against the patients the model was pretrained on")
    splits, vocab, source = load_task_splits(
        args.data_dir, args.task_data, num_labels=args.num_labels, output_dir=out, on_error=args.on_task_error,
        input_path=args.input, vocab=vocab, max_length=args.max_length, split_seed=args.split_seed,
        train_ratio=args.train_ratio, pretraining=pretraining)
    for name, ds in splits.items():
        if len(ds) == 0:
            raise UserError(f"the {name} split of the task has no patients; use more patients")
    y_train = splits["train"].data["labels"].numpy()
    check_labels(y_train, args.num_labels, "train split")

    set_seed(args.seed)
    model = load_classifier(model_dir, args.num_labels, attn_implementation=args.attn_implementation)
    # the pretrained model decided which time inputs it takes; batches follow it
    data = {s: TruncatedDataset(ds, args.max_length, with_days=uses_time(model.config)) for s, ds in splits.items()}
    if args.pooling is not None:  # saved in checkpoint-best's config.json, so predictions pool the same way
        model.config.classifier_pooling = args.pooling
    check_freezing(args.freeze_encoder, args.train_last_layers, num_layers=model.config.num_hidden_layers)
    frozen = freeze_for_finetuning(model, args.freeze_encoder, args.train_last_layers)
    if frozen and main:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"training {trainable:,} of {sum(p.numel() for p in model.parameters()):,} parameters "
              f"({len(frozen)} encoder tensors frozen)")
    if args.learning_rate is None:  # the default for this model's size, recorded as resolved
        preset = preset_for_hidden_size(model.config.hidden_size)
        resolve_learning_rate(args, preset)
        if main:
            print(f"learning rate {args.learning_rate:g} (the default for a {preset}-sized model; --learning-rate "
                  "sets another)")
    if model.config.vocab_size != len(vocab):
        raise UserError(f"{model_dir}: config.json has vocab_size {model.config.vocab_size} but vocab.json has "
                        f"{len(vocab)} tokens; the folder mixes two models")
    check_token_types(splits, model.config.type_vocab_size, model_dir)
    max_visit = max(int(d.data["position_ids"].max()) for d in splits.values())
    if min(max_visit, args.max_length) >= model.config.max_position_embeddings:
        raise UserError(f"patients have up to {max_visit} visits but the model knows "
                        f"{model.config.max_position_embeddings} positions; lower --max-length")
    if args.class_weights == "auto":
        counts = np.bincount(y_train, minlength=args.num_labels)
        model.config.class_weights = (len(y_train) / (args.num_labels * np.maximum(counts, 1))).tolist()

    select_by = args.metric_for_best_model
    y_val = splits["val"].data["labels"].numpy()
    if select_by != "loss" and len(np.unique(y_val)) < 2:
        # AUROC/AUPRC/F1 are undefined on a one-class validation split; the loss still ranks models
        print(f"note: the val split has only label {int(y_val[0]) if len(y_val) else '-'} ({len(y_val)} patients); "
              f"selecting the best model by loss instead of {select_by}. Use more patients for a real choice.")
        select_by = "loss"
    metric = "eval_loss" if select_by == "loss" else f"eval_{select_by}"
    greater = select_by != "loss"
    overrides: dict = {}  # --eval-steps / --save-steps 0 (the fine-tuning default) mean once per epoch
    if args.eval_steps == 0:
        overrides.update(eval_strategy="epoch", eval_steps=None)
    if args.save_steps == 0:
        overrides.update(save_strategy="epoch", save_steps=None)
    # no save_total_limit: HF's rotation globs checkpoint-* and, ordering by mtime, would delete checkpoint-best
    targs = build_training_arguments(args, device=device, metric_for_best_model=metric, greater_is_better=greater,
                                     **overrides)
    callbacks: list = [BestModelCallback(out / BEST_DIR, vocab, metric, greater), VocabCallback(vocab),
                       EarlyStopping(metric, greater, args.early_stopping_patience)]
    if args.freeze_encoder_epochs > 0:
        callbacks.append(FreezeEncoder(model, args.freeze_encoder_epochs))
    if args.mlflow_tracking_uri:
        tracker = MlflowLogger(args.mlflow_tracking_uri, args.mlflow_experiment_name,
                               {k: v for k, v in dataclasses.asdict(args).items() if v is not None}, out, enabled=main)
        tracker.start(resume=checkpoint is not None)
        callbacks.append(tracker)
    batching = dict(batch_size=args.batch_size, max_tokens_per_batch=args.max_tokens_per_batch, seed=args.seed)
    trainer = ExMedTrainer(model=model, args=targs, train_dataset=data["train"], eval_dataset=data["val"],
                           data_collator=Collator.for_model(model.config, mlm=False), callbacks=callbacks,
                           train_batch_sampler=make_sampler(data["train"].lengths, shuffle=True, **batching),
                           eval_batch_sampler=make_sampler(data["val"].lengths, shuffle=False, **batching),
                           make_metrics=ClassificationMetrics)
    if main:
        print(f"Task data: {len(data['train']):,} train / {len(data['val']):,} val / {len(data['test']):,} test "
              f"patients; train prevalence {np.bincount(y_train, minlength=args.num_labels) / len(y_train)}")
        write_run_info(out, args, extra={"data": source, "device": device, "model_path": str(model_dir),
                                         "parameters": sum(p.numel() for p in model.parameters())})
        write_text(out / "training_args.json", targs.to_json_string())
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - t0
    if main:
        trainer.save_state()
    distributed.barrier()
    if not main:
        return {}
    if not (out / BEST_DIR / "config.json").is_file():
        raise UserError(f"no validation score was finite, so no best model was saved in {out / BEST_DIR}; "
                        "check the val split has both classes, or use --metric-for-best-model loss")
    best = load_classifier(out / BEST_DIR, args.num_labels)
    p_val = predict_probs(best, data["val"], args.batch_size * 4, device)
    p_test = predict_probs(best, data["test"], args.batch_size * 4, device)
    doc = evaluate_and_write(out, "ExMed-BERT", test_ids=list(data["test"].patient_ids),
                             y_test=data["test"].data["labels"].numpy(), p_test=p_test,
                             y_val=data["val"].data["labels"].numpy(), p_val=p_val,
                             n_bootstrap=args.n_bootstrap, seed=args.seed,
                             extra={"data": source, "model_path": str(model_dir), "best_model": str(out / BEST_DIR),
                                    "inputs": describe_inputs(model_dir),
                                    "selected_on": metric, "best_val": callbacks[0].best,
                                    "best_step": callbacks[0].best_step, "steps": trainer.state.global_step,
                                    "epochs": trainer.state.epoch, "train_seconds": round(train_seconds, 1),
                                    "n_train": len(data["train"])})
    print(format_summary(doc))
    print(f"wrote {out}/metrics.json, predictions.csv (+ predictions.parquet, MEDS schema, for binary tasks), roc.png, "
          f"pr.png; best model in {out / BEST_DIR}")
    return doc


def describe_inputs(model_dir: Path) -> str:
    """What the model saw and how its code embeddings started, for the comparison report."""
    for folder in (Path(model_dir), Path(model_dir).parent):
        coverage = folder / COVERAGE_FILE
        if coverage.is_file():
            try:
                demo = bool(json.loads(coverage.read_text(encoding="utf-8")).get("demo"))
            except (OSError, ValueError):
                demo = False
            return ("code sequence + age + sex; pretrained from "
                    + ("demo ClinVec" if demo else "ClinVec") + " code embeddings")
    return "code sequence + age + sex; pretrained from randomly initialised code embeddings"
