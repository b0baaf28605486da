"""Trainer callbacks shared by pretraining and fine-tuning: the best model kept in checkpoint-best/,
the vocabulary copied into every checkpoint-N/, and the batch sampler told which epoch it is.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from exmed_bert.io import write_json

BEST_DIR = "checkpoint-best"


def save_best(model: Any, folder: str | os.PathLike, vocab: Any = None, metrics: dict | None = None) -> Path:
    """Write a complete `save_pretrained` folder (config.json, model.safetensors, vocab.json) atomically.

    The folder is built under a temporary name and swapped in, so a crash leaves the previous best
    model, never a half-written one.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        model.save_pretrained(tmp)  # safetensors: transformers 5 always writes model.safetensors
        if vocab is not None:
            vocab.save(tmp / "vocab.json")
        if metrics is not None:
            write_json(tmp / "eval_results.json", metrics)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


class BestModelCallback(TrainerCallback):
    """After each evaluation, save the model to `folder` when `metric` improved (rank 0 only).

    The best value so far comes from `state.best_metric`, which the Trainer stores in every checkpoint
    (set `metric_for_best_model` to the same metric), so a resumed run keeps comparing to the true best.
    """

    def __init__(self, folder: str | os.PathLike, vocab: Any = None, metric: str = "eval_loss",
                 greater_is_better: bool = False):
        self.folder = Path(folder)
        self.vocab = vocab
        self.metric = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.greater_is_better = greater_is_better
        self.best: float | None = None
        self.best_step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.best is None and state.best_metric is not None:
            self.best = state.best_metric
            self.best_step = state.best_global_step

    def is_better(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.best is None or not (self.folder / "config.json").is_file():
            return True
        return value > self.best if self.greater_is_better else value < self.best

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None or not self.is_better(float(value)):
            return
        self.best, self.best_step = float(value), state.global_step
        if state.is_world_process_zero and model is not None:
            save_best(model, self.folder, self.vocab, {**metrics, "step": state.global_step})


class VocabCallback(TrainerCallback):
    """Put vocab.json into every checkpoint-N/, so each checkpoint is a complete model folder."""

    def __init__(self, vocab: Any):
        self.vocab = vocab

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                self.vocab.save(folder / "vocab.json")


class SamplerEpochCallback(TrainerCallback):
    """Call `target.set_epoch(epoch)` before each pass (the batch sampler, the masking collator), so the
    batch order and masks depend only on (seed, epoch) and a resumed run sees the same ones. We do it
    here because accelerate's wrappers (shards, skipped batches on resume) don't always forward it.
    This reaches objects in the main process only; the sampler carries the epoch to DataLoader workers."""

    def __init__(self, target: Any):
        self.target = target

    def on_epoch_begin(self, args, state, control, **kwargs):
        # at an epoch boundary state.epoch is a whole number; resumed mid-epoch it is e + fraction
        epoch = int(math.floor((state.epoch or 0.0) + 1e-9))
        self.target.set_epoch(epoch)
