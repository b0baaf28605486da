"""Pretraining run, top to bottom: load data -> build model (+ ClinVec) -> Trainer -> best model + reports.

`run_pretraining(args)` takes the CLI's `Args` (exmed_bert.cli.pretrain) and returns the final metrics.
Under torchrun every rank runs this; only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from exmed_bert.errors import UserError
from exmed_bert.io import file_fingerprint, write_json, write_run_info, write_text
from exmed_bert.training import distributed
from exmed_bert.training.args import (build_training_arguments, effective_batch_size, resolve_checkpoint,
                                      resolve_device)
from exmed_bert.training.callbacks import BEST_DIR, BestModelCallback, VocabCallback
from exmed_bert.training.teelog import TeeLog

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
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab

    paths = check_data_paths(data_dir, name)
    vocab = Vocab.load(paths["vocab"])
    train, val = PatientDataset.load(paths["train"]), PatientDataset.load(paths["val"])
    for split in ("train", "val"):
        ds = train if split == "train" else val
        if len(ds) == 0:
            raise UserError(f"{paths[split]}: holds no patients; convert more data or change --train-ratio")
        top = int(ds.data["input_ids"].max())
        if top >= len(vocab):
            raise UserError(f"{paths[split]}: token id {top} is outside {paths['vocab']} ({len(vocab)} tokens); "
                            "the dataset and vocabulary come from different conversions - re-run the conversion")
    return train, val, vocab


def build_model(args: Any, vocab_size: int, max_visit: int):
    """ExMedBertForPreTraining from the preset + explicit flags (seeded before the weights are drawn)."""
    from transformers import set_seed

    from exmed_bert.model import ExMedBertConfig, ExMedBertForPreTraining, resolve_architecture

    arch = resolve_architecture(args.model_size, num_hidden_layers=args.num_hidden_layers,
                                hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
                                num_attention_heads=args.num_attention_heads)
    if max_visit >= args.max_position_embeddings:
        raise UserError(f"a patient has {max_visit} visits but --max-position-embeddings is "
                        f"{args.max_position_embeddings}; raise it to at least {max_visit + 1} "
                        "or convert with a smaller --max-length")
    code_embedding_size = None
    if args.use_clinvec:
        from exmed_bert.clinvec import code_embedding_size_for

        code_embedding_size = code_embedding_size_for(args.resize_method, arch["hidden_size"])
    try:
        config = ExMedBertConfig(
            vocab_size=vocab_size, max_position_embeddings=args.max_position_embeddings,
            hidden_dropout_prob=args.hidden_dropout_prob, attention_probs_dropout_prob=args.attention_probs_dropout_prob,
            plos_weight=args.plos_weight if args.plos else 0.0, initialization=args.initialization,
            code_embedding_size=code_embedding_size, **arch)
    except ValueError as e:
        raise UserError(str(e)) from None
    set_seed(args.seed)
    return ExMedBertForPreTraining(config)


def init_from_clinvec(args: Any, model, vocab) -> list:
    """Copy ClinVec vectors into the code table; returns callbacks (the freeze, when asked for)."""
    from exmed_bert.clinvec import freeze_callback, init_code_embeddings

    report = init_code_embeddings(model, vocab, clinvec_dir=args.clinvec_dir, vocab_types=args.vocab_types,
                                  use_hierarchical_init=args.use_hierarchical_init,
                                  resize_method=args.resize_method, output_dir=args.output_dir, seed=args.seed)
    rows = report.get("initialized_row_ids", [])
    print(f"ClinVec: initialised {len(rows)} of {len(vocab)} code rows from {args.clinvec_dir}")
    if args.freeze_clinvec_steps > 0:
        return [freeze_callback(model, rows, args.freeze_clinvec_steps)]
    return []


def describe_model(model) -> str:
    from exmed_bert.model import count_parameters

    c = model.config
    total = count_parameters(model)
    core = count_parameters(model, exclude_embeddings=True)
    return (f"Model: {c.num_hidden_layers} layers, hidden {c.hidden_size}, intermediate {c.intermediate_size}, "
            f"{c.num_attention_heads} heads, vocabulary {c.vocab_size}: {total:,} parameters "
            f"({core:,} without embedding tables)")


def run_pretraining(args: Any) -> dict:
    """The whole run; returns the final evaluation metrics."""
    main = distributed.is_main_process()
    out = Path(args.output_dir)
    # settle the cheap failures before anything is written
    check_data_paths(args.data_dir, args.dataset_name)
    resolve_device(args.device)
    resolve_checkpoint(args.resume_from_checkpoint, out, quiet=True)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    with TeeLog(out / "training.log", enabled=main):
        return _run(args, out, main)


def _run(args: Any, out: Path, main: bool) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    from exmed_bert.training.batching_setup import make_batching
    from exmed_bert.training.metrics import PretrainMetrics, code_counts, unigram_top_ids
    from exmed_bert.training.trainer import ExMedTrainer

    hf_logging.set_verbosity_info() if main else hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()  # hub download bars; the Trainer's own bar stays
    device = resolve_device(args.device)
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, out)
    train_ds, val_ds, vocab = load_data(args.data_dir, args.dataset_name)
    max_visit = int(max(train_ds.data["position_ids"].max(), val_ds.data["position_ids"].max()))
    model = build_model(args, len(vocab), max_visit)
    callbacks: list = [BestModelCallback(out / BEST_DIR, vocab, "eval_loss"), VocabCallback(vocab)]
    if args.use_clinvec and checkpoint is None:  # on resume the checkpoint's weights win
        callbacks += init_from_clinvec(args, model, vocab)
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

    targs = build_training_arguments(args, device=device)
    train_sampler, eval_sampler, collator, eval_collator = make_batching(args, train_ds, val_ds, len(vocab))
    unigram = unigram_top_ids(code_counts(train_ds.data["input_ids"], len(vocab)))
    tracker = _mlflow(args, out, main, resume=checkpoint is not None)
    if tracker is not None:
        callbacks.append(tracker)
    trainer = ExMedTrainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=val_ds,
                           data_collator=collator, eval_collator=eval_collator, callbacks=callbacks,
                           train_batch_sampler=train_sampler, eval_batch_sampler=eval_sampler,
                           make_metrics=lambda: PretrainMetrics(unigram, plos=args.plos))
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


def _mlflow(args: Any, out: Path, main: bool, resume: bool):
    if not args.mlflow_tracking_uri:
        return None
    from exmed_bert.training.mlflow_tracking import MlflowLogger

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
        print(f"PLOS: AUROC {report['eval_plos_auroc']:.3f}, F1 {report['eval_plos_f1']:.3f}")
