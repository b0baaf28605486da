"""Pretraining run, top to bottom: load data -> build model (+ ClinVec) -> Trainer -> best model + reports.

`run(args)` takes the stage's `PretrainArgs` and returns the final metrics. Under torchrun every rank
runs this; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import sys
from pathlib import Path

import torch
from transformers import set_seed
from transformers.utils import logging as hf_logging

from exmed_bert.clinvec.freeze import freeze_callback
from exmed_bert.clinvec.init import COVERAGE_FILE, format_summary, init_code_embeddings
from exmed_bert.clinvec.loader import ClinVecTable, load_clinvec
from exmed_bert.clinvec.match import match_tokens
from exmed_bert.clinvec.release import demo_notice, expected_dim, resolve_clinvec_dir
from exmed_bert.clinvec.resize import resolve_method
from exmed_bert.data.collate import Collator
from exmed_bert.data.dataset import PatientDataset
from exmed_bert.data.sampler import make_sampler
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError
from exmed_bert.io import file_fingerprint, write_json, write_run_info, write_text
from exmed_bert.model.architecture import ARCH_KEYS
from exmed_bert.model.modeling import ExMedBertConfig, ExMedBertForPreTraining, count_parameters
from exmed_bert.training import distributed
from exmed_bert.training.args import PretrainArgs
from exmed_bert.training.callbacks import BEST_DIR, BestModelCallback, VocabCallback
from exmed_bert.training.metrics import PretrainMetrics, code_counts, plos_reference_metrics, unigram_top_ids
from exmed_bert.training.mlflow_tracking import MlflowLogger
from exmed_bert.training.runtime import (build_training_arguments, effective_batch_size, resolve_checkpoint,
                                         resolve_device)
from exmed_bert.training.teelog import TeeLog
from exmed_bert.training.trainer import ExMedTrainer

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # cursor moves of progress bars, kept out of the log
CONVERT_HINT = ("run `python scripts/convert_synthetic_to_dataset.py --input data/synthetic_patients.json "
                "--output {dir}/{name}.pt` first")


def data_paths(data_dir: str | os.PathLike, name: str) -> dict[str, Path]:
    """The converter's outputs: <name>_train.pt, <name>_val.pt and vocab.json in the data folder."""
    d = Path(data_dir)
    return {"train": d / f"{name}_train.pt", "val": d / f"{name}_val.pt", "vocab": d / "vocab.json"}


def check_data_paths(data_dir: str | os.PathLike, name: str) -> dict[str, Path]:
    paths = data_paths(data_dir, name)
    hint = CONVERT_HINT.format(dir=data_dir, name=name)
    if not Path(data_dir).is_dir():
        raise UserError(f"{data_dir}: data folder not found; {hint}")
    for path in paths.values():
        if not path.is_file():
            raise UserError(f"{path}: not found; {hint}")
    return paths


def load_data(data_dir: str | os.PathLike, name: str):
    """(train, val, vocab), checked to exist and to agree with each other."""
    paths = check_data_paths(data_dir, name)
    vocab = Vocab.load(paths["vocab"])
    train, val = PatientDataset.load(paths["train"]), PatientDataset.load(paths["val"])
    for ds in (train, val):
        ds.check_vocab(vocab, paths["vocab"])
    for split in ("train", "val"):
        ds = train if split == "train" else val
        if len(ds) == 0:
            raise UserError(f"{paths[split]}: holds no patients; convert more data or change --train-ratio")
        top = int(ds.data["input_ids"].max())
        if top >= len(vocab):
            raise UserError(f"{paths[split]}: token id {top} is outside {paths['vocab']} ({len(vocab)} tokens); "
                            "the dataset and vocabulary come from different conversions - re-run the conversion")
    return train, val, vocab


@dataclasses.dataclass
class ClinVecSource:
    """Where a run's ClinVec vectors come from, their width, and the resize method decided for them."""

    folder: Path
    dim: int
    method: str                                # resolve_method's choice, stored in the model's config.json
    tables: dict[str, ClinVecTable] | None    # the vectors of a fresh run (the run's one load); None on resume


def clinvec_source(args: PretrainArgs, fresh: bool) -> ClinVecSource | None:
    """The ClinVec folder (the release, else the demo release beside it), the vectors' width and the resize
    method: decided here, once, before the model is built. A fresh run loads the vectors; a resumed
    one keeps its checkpoint's weights and reads only the width.

    Runs before --output-dir exists, so a bad ClinVec folder (127 columns, NaN, wrong ntype, no node table:
    a UserError from the loader) leaves nothing behind.
    """
    if not args.use_clinvec:
        return None
    folder = resolve_clinvec_dir(args.clinvec_dir)
    notice = demo_notice(args.clinvec_dir, folder)
    if notice:
        print(notice, file=sys.stderr)
    tables = load_clinvec(folder, args.vocab_types) if fresh else None
    dim = next(iter(tables.values())).vectors.shape[1] if tables else expected_dim(folder)
    return ClinVecSource(folder, dim, resolve_method(args.resize_method, args.hidden_size, dim), tables)


def build_model(args: PretrainArgs, vocab_size: int, max_visit: int, clinvec: ClinVecSource | None = None,
                type_vocab_size: int = 4):
    """ExMedBertForPreTraining with the architecture `args` resolved (seeded before the weights are drawn).

    type_vocab_size: rows of the token-type table, `Vocab.type_vocab_size()` (4, or 5 with "other:" tokens)."""
    if max_visit >= args.max_position_embeddings:
        raise UserError(f"a patient has {max_visit} visits but --max-position-embeddings is "
                        f"{args.max_position_embeddings}; raise it to at least {max_visit + 1} "
                        "or convert with a smaller --max-length")
    method = clinvec.method if clinvec is not None else None
    try:
        config = ExMedBertConfig(
            vocab_size=vocab_size, max_position_embeddings=args.max_position_embeddings,
            hidden_dropout_prob=args.hidden_dropout_prob, attention_probs_dropout_prob=args.attention_probs_dropout_prob,
            plos_weight=args.plos_weight if args.plos else 0.0, initialization=args.initialization,
            position_embedding_type=args.position_embedding_type, plos_pooling=args.pooling,
            # learned_projection: a ClinVec-wide code table and a trainable map to the hidden size
            code_embedding_size=clinvec.dim if method == "learned_projection" else None,
            clinvec_resize_method=method, attn_implementation=args.attn_implementation,
            time_buckets=args.time_buckets, time2vec=args.time2vec, type_vocab_size=type_vocab_size,
            **{k: getattr(args, k) for k in ARCH_KEYS})
    except ValueError as e:
        raise UserError(str(e)) from None
    set_seed(args.seed)
    return ExMedBertForPreTraining(config)


def init_from_clinvec(args: PretrainArgs, model, vocab: Vocab, clinvec: ClinVecSource) -> dict:
    """Copy ClinVec vectors into the code table; returns the coverage report (written by `_run`)."""
    rows = init_code_embeddings(model, vocab.tokens, clinvec.tables, source=clinvec.folder,
                                use_hierarchical_init=args.use_hierarchical_init, seed=args.seed,
                                requested_method=args.resize_method)
    rows.copy_into(model)
    print(format_summary(rows.report))
    print(f"ClinVec: initialised {len(rows.row_ids)} of {len(vocab)} code rows from {clinvec.folder}")
    return rows.report


def clinvec_rows_on_resume(args: PretrainArgs, out: Path, vocab: Vocab) -> list[int]:
    """The ClinVec-initialised row ids of the run being resumed, for `--freeze-clinvec-steps`.

    Read from the run's clinvec_coverage.json (`initialized_row_ids`); when that file is missing or does not
    fit the vocabulary, re-match the vocabulary against ClinVec (no weights are touched: the checkpoint's win).
    """
    path = out / COVERAGE_FILE
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["initialized_row_ids"]
        if isinstance(rows, list) and all(isinstance(i, int) and 0 <= i < len(vocab) for i in rows):
            return rows
        print(f"{path}: initialized_row_ids do not fit the vocabulary; re-matching ClinVec", file=sys.stderr)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    tables = load_clinvec(resolve_clinvec_dir(args.clinvec_dir), args.vocab_types)
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    matches = match_tokens(list(vocab.tokens), tables, use_hierarchical_init=args.use_hierarchical_init)
    return [ids[m.token] for m in matches if m.source != "random"]


def describe_model(model) -> str:
    c = model.config
    total = count_parameters(model)
    core = count_parameters(model, exclude_embeddings=True)
    return (f"Model: {c.num_hidden_layers} layers, hidden {c.hidden_size}, intermediate {c.intermediate_size}, "
            f"{c.num_attention_heads} heads, vocabulary {c.vocab_size}: {total:,} parameters "
            f"({core:,} without embedding tables)")


@dataclasses.dataclass
class Prepared:
    """Everything validated and loaded before --output-dir is touched."""

    device: str
    checkpoint: str | None
    train: PatientDataset
    val: PatientDataset
    vocab: Vocab
    model: ExMedBertForPreTraining
    clinvec: dict | None  # the coverage report of a fresh ClinVec initialisation
    console: str  # what was printed while preparing (already on the console), for training.log


def run(args: PretrainArgs) -> dict:
    """The whole run; returns the final evaluation metrics."""
    main = distributed.is_main_process()
    out = Path(args.output_dir)
    prep = prepare(args, out)  # every input check (data, vocab, architecture, ClinVec, resume) before any write
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _append_log(out / "training.log", prep.console)
    with TeeLog(out / "training.log", enabled=main):
        return _run(args, out, main, prep)


def _append_log(path: Path, text: str) -> None:
    """Add console text to the log (appended like TeeLog does): last state of redrawn lines, no ANSI codes."""
    lines = [_ANSI.sub("", line.rstrip("\r").rsplit("\r", 1)[-1]) for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if lines:
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


def prepare(args: PretrainArgs, out: Path) -> Prepared:
    """Validate and load all inputs; raises UserError before anything exists in --output-dir.

    What this prints (ClinVec's demo warning and coverage table) is shown at once and kept, so it can be
    copied into training.log once that exists.
    """
    check_data_paths(args.data_dir, args.dataset_name)
    device = resolve_device(args.device)
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, out, quiet=True)
    kept = io.StringIO()
    stdout, stderr = _Echo(sys.stdout, kept), _Echo(sys.stderr, kept)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        train_ds, val_ds, vocab = load_data(args.data_dir, args.dataset_name)
        max_visit = int(max(train_ds.data["position_ids"].max(), val_ds.data["position_ids"].max()))
        clinvec = clinvec_source(args, fresh=checkpoint is None)  # on resume the checkpoint's weights win
        model = build_model(args, len(vocab), max_visit, clinvec, type_vocab_size=vocab.type_vocab_size())
        report = init_from_clinvec(args, model, vocab, clinvec) if clinvec and clinvec.tables else None
    return Prepared(device, checkpoint, train_ds, val_ds, vocab, model, report, kept.getvalue())


class _Echo:
    """A text stream that writes through to `console` and keeps a copy."""

    def __init__(self, console, kept: io.StringIO):
        self.console, self.kept = console, kept

    def write(self, s: str) -> int:
        self.kept.write(s)
        return self.console.write(s)

    def __getattr__(self, name: str):
        return getattr(self.console, name)


def _run(args: PretrainArgs, out: Path, main: bool, prep: Prepared) -> dict:
    hf_logging.set_verbosity_info() if main else hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()  # hub download bars; the Trainer's own bar stays
    device, checkpoint, model, vocab = prep.device, prep.checkpoint, prep.model, prep.vocab
    train_ds, val_ds = prep.train, prep.val
    if args.resume_from_checkpoint == "auto" and checkpoint is None:  # resolved (quietly) in `prepare`
        print(f"--resume-from-checkpoint auto: no checkpoint-N in {out}; starting from scratch")
    callbacks: list = [BestModelCallback(out / BEST_DIR, vocab, "eval_loss"), VocabCallback(vocab)]
    callbacks += _clinvec_callbacks(args, out, main, prep)
    world = distributed.world_size()
    if main:
        print(describe_model(model))
        print(f"Data: {len(train_ds):,} training / {len(val_ds):,} validation patients from {args.data_dir}")
        if args.max_tokens_per_batch:
            per_update = (f"{args.max_tokens_per_batch * args.gradient_accumulation_steps * world:,} tokens per "
                          f"update at most (token budget {args.max_tokens_per_batch} x accumulation "
                          f"{args.gradient_accumulation_steps} x {world} processes)")
        else:
            per_update = (f"{effective_batch_size(args, world)} patients per update (batch {args.batch_size} x "
                          f"accumulation {args.gradient_accumulation_steps} x {world} processes)")
        print(f"Device: {device} x {world} process(es); effective batch size {per_update}")
        if device == "cuda" and not args.max_tokens_per_batch and args.batch_size < 256:
            print(f"note: {args.batch_size} patients per step leave a GPU mostly idle; --max-tokens-per-batch "
                  "65536 fills each step with several hundred generator-sized patients (docs/PERFORMANCE.md)")

    targs = build_training_arguments(args, device=device)
    train_sampler, eval_sampler, collator, eval_collator = make_batching(args, train_ds, val_ds, len(vocab))
    unigram = unigram_top_ids(code_counts(train_ds.data["input_ids"], len(vocab)))
    # the PLOS head's trivial reference (stays per patient) on the same validation patients; fixed, so once
    plos_reference = (plos_reference_metrics(val_ds.data["los_offsets"], val_ds.plos_labels(int(args.plos_threshold)))
                      if args.plos else None)
    tracker = _mlflow(args, out, main, resume=checkpoint is not None)
    if tracker is not None:
        callbacks.append(tracker)
    trainer = ExMedTrainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=val_ds,
                           data_collator=collator, eval_collator=eval_collator, callbacks=callbacks,
                           train_batch_sampler=train_sampler, eval_batch_sampler=eval_sampler,
                           make_metrics=lambda: PretrainMetrics(unigram, plos=args.plos,
                                                                plos_reference=plos_reference))
    if main:
        write_run_info(out, args, extra={
            "data_fingerprint": {k: file_fingerprint(p) for k, p in data_paths(args.data_dir, args.dataset_name).items()},
            "device": device, "world_size": world, "effective_batch_size": effective_batch_size(args, world),
            "parameters": sum(p.numel() for p in model.parameters()), "resumed_from": checkpoint})
        write_text(out / "training_args.json", targs.to_json_string())
    status = "FAILED"
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
        final = trainer.evaluate()  # after the last step, whatever eval_steps was
        status = "FINISHED"
    finally:
        if tracker is not None and main and status == "FAILED":
            tracker.finish(status)
    best = callbacks[0]
    report = {**final, "step": trainer.state.global_step, "best_eval_loss": best.best, "best_step": best.best_step,
              "best_model": str(out / BEST_DIR)}
    if main:
        trainer.save_state()  # trainer_state.json next to the checkpoints
        write_json(out / "eval_results.json", report)
        _print_summary(report)
        if tracker is not None:
            tracker.log_metrics({f"final_{k}": v for k, v in final.items()}, trainer.state.global_step)
            tracker.log_model_folder(out / BEST_DIR)
            tracker.finish(status)
    distributed.barrier()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return report


def _clinvec_callbacks(args: PretrainArgs, out: Path, main: bool, prep: Prepared) -> list:
    """Write the coverage report of a fresh ClinVec run; the freeze callback, fresh or resumed.

    On resume the callback keys on `state.global_step` (restored from the checkpoint), so rows stay frozen
    until step --freeze-clinvec-steps however often the run was restarted.
    """
    if not args.use_clinvec:
        return []
    if prep.clinvec is not None:
        if main:
            write_json(out / COVERAGE_FILE, prep.clinvec)
        rows = prep.clinvec.get("initialized_row_ids", [])
    elif args.freeze_clinvec_steps > 0:
        rows = clinvec_rows_on_resume(args, out, prep.vocab)
    else:
        return []
    if args.freeze_clinvec_steps <= 0:
        return []
    if prep.checkpoint is not None:
        print(f"ClinVec: keeping {len(rows)} initialised code rows frozen until step {args.freeze_clinvec_steps}")
    return [freeze_callback(prep.model, rows, args.freeze_clinvec_steps)]


def _mlflow(args: PretrainArgs, out: Path, main: bool, resume: bool):
    if not args.mlflow_tracking_uri:
        return None
    params = {k: v for k, v in dataclasses.asdict(args).items() if v is not None}
    tracker = MlflowLogger(args.mlflow_tracking_uri, args.mlflow_experiment_name, params, out, enabled=main)
    tracker.start(resume=resume)
    return tracker


def _print_summary(report: dict) -> None:
    acc = report.get("eval_top10_accuracy")
    uni = report.get("eval_unigram_top10_accuracy")
    print(f"Final validation: loss {report.get('eval_loss', float('nan')):.4f}, masked accuracy "
          f"{report.get('eval_accuracy', float('nan')):.3f}, top-10 accuracy {acc:.3f} "
          f"(unigram-frequency baseline {uni:.3f}); best eval loss {report['best_eval_loss']:.4f} "
          f"at step {report['best_step']} -> {report['best_model']}")
    if "eval_plos_auroc" in report:
        print(f"PLOS: AUROC {report['eval_plos_auroc']:.3f}, AUPRC {report['eval_plos_auprc']:.3f} "
              f"(prevalence {report['eval_plos_prevalence']:.3f}), F1 at 0.5 {report['eval_plos_f1']:.3f}; "
              f"reference 'number of stays': AUROC {report['eval_plos_reference_auroc']:.3f}, "
              f"AUPRC {report['eval_plos_reference_auprc']:.3f}")


def make_batching(args: PretrainArgs, train_ds: PatientDataset, val_ds: PatientDataset, vocab_size: int):
    """(train batch sampler, eval batch sampler, train collator, eval collator) for a pretraining run.

    With --packing, batches are random patients up to the token budget, packed into rows as long as the
    longest patient (seq_ids; attention stays within a patient); else each batch is one length bucket.
    """
    plos = int(args.plos_threshold) if args.plos else None
    pack = int(max(train_ds.lengths.max(), val_ds.lengths.max())) if args.packing else None
    # dynamic: each batch is masked with the epoch its sampler stamped on it, also inside DataLoader workers
    train = Collator(vocab_size=vocab_size, seed=args.seed, mlm_probability=args.mlm_probability,
                     plos_threshold=plos, dynamic=bool(args.dynamic_masking), pack_length=pack,
                     time_buckets=args.time_buckets, time2vec=args.time2vec)
    # validation masks are fixed (and drawn with another seed than training's static masks)
    evaluate = Collator(vocab_size=vocab_size, seed=args.seed + 1, mlm_probability=args.mlm_probability,
                        plos_threshold=plos, pack_length=pack, time_buckets=args.time_buckets,
                        time2vec=args.time2vec)
    kw = dict(batch_size=args.batch_size, max_tokens_per_batch=args.max_tokens_per_batch, seed=args.seed,
              packing=bool(args.packing))
    return (make_sampler(train_ds.lengths, shuffle=True, **kw), make_sampler(val_ds.lengths, shuffle=False, **kw),
            train, evaluate)
