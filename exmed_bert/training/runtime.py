"""Where a training stage's settings meet the machine: the device, precision and optimizer switches, the
checkpoint to resume from, and the one place the stage arguments become transformers' `TrainingArguments`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.trainer_pt_utils import safe_globals  # numpy arrays in rng_state, as the Trainer allows
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import is_torch_tf32_available

from exmed_bert.errors import UserError
from exmed_bert.training.args import TrainingCommonArgs, check_attention

RUNS_DIR = "runs"  # TensorBoard event files, as the guide shows (output/runs)


def fast_path_kwargs(device: str, bf16: bool | None = None, tf32: bool | None = None,
                     tf32_capable: bool = False) -> dict[str, Any]:
    """Precision and optimizer `TrainingArguments` for a device; `None` flags take the device's default.

    CUDA: bf16 autocast on; TF32 for the fp32 matmuls left outside autocast (every matmul with --no-bf16)
    when the GPU has it (`tf32_capable`: compute capability 8.0+); fused AdamW (one kernel for all
    parameters instead of a loop of small ones). CPU: bf16 only when asked, TF32 and the optimizer left
    to transformers' defaults, so CPU runs are unchanged.
    """
    if device == "cuda":
        if tf32 and not tf32_capable:
            raise UserError("--tf32 needs an Ampere or newer CUDA GPU (compute capability 8.0+); drop the flag")
        return dict(bf16=True if bf16 is None else bool(bf16), tf32=tf32_capable if tf32 is None else bool(tf32),
                    optim="adamw_torch_fused")
    if tf32:
        raise UserError(f"--tf32 applies to CUDA GPUs only; drop it with --device {device}")
    return dict(bf16=bool(bf16))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible else 'cpu'; 'cuda' without a GPU is a UserError."""
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch "
                        "(check `nvidia-smi` and that the CUDA build of torch is installed), or use --device cpu")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_checkpoint(resume: str | None, output_dir: str | os.PathLike, quiet: bool = False) -> str | None:
    """The checkpoint folder to resume from: None, an explicit folder (checked), or the latest for 'auto'."""
    if resume is None or resume == "":
        return None
    if resume == "auto":
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            if not quiet:
                print(f"--resume-from-checkpoint auto: no checkpoint-N in {output_dir}; starting from scratch")
            return None
        check_checkpoint(last)
        return last
    check_checkpoint(resume)
    return resume


def check_checkpoint(path: str | os.PathLike) -> None:
    """A resumable checkpoint has the trainer state and the weights; say what is missing otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: checkpoint folder not found; pass an existing checkpoint-N folder or 'auto'")
    if not (path / "trainer_state.json").is_file():
        raise UserError(f"{path}: not a training checkpoint (no trainer_state.json); pass a checkpoint-N folder")
    if not any((path / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise UserError(f"{path}: checkpoint has no model.safetensors (incomplete or corrupted); "
                        "resume from an earlier checkpoint-N")
    check_trainer_state_files(path)


def check_trainer_state_files(path: Path) -> None:
    """The Trainer's own .pt/.pth files (optimizer, scheduler, RNG) must load as plain tensors.

    A file that needs unpickling of arbitrary objects is refused here, by name, before the Trainer
    touches it; nothing in it runs.
    """
    for f in sorted([*path.glob("*.pt"), *path.glob("*.pth")]):
        try:
            with safe_globals():
                torch.load(f, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UserError(f"{f}: refused to load this checkpoint file (not plain tensors, or damaged: "
                            f"{reason}); resume only from checkpoints this tool wrote, or an earlier "
                            "checkpoint-N") from None


def build_training_arguments(args: TrainingCommonArgs, *, device: str, metric_for_best_model: str = "eval_loss",
                             greater_is_better: bool = False, **overrides: Any):
    """`TrainingArguments` from the common flags: TensorBoard in output/runs, safetensors checkpoints.

    MLflow is never in `report_to`: `MlflowLogger` (an explicit client) is added only when a tracking URI
    is given, so the stock integration can't fall back to ./mlruns. Evaluation and saving are step-based.
    """
    check_attention(args.attn_implementation, device, getattr(args, "attention_probs_dropout_prob", 0.0))
    fast = fast_path_kwargs(device, args.bf16, args.tf32, tf32_capable=device == "cuda" and is_torch_tf32_available())
    if fast["bf16"] and device == "cpu":
        print("note: --bf16 on CPU is slow on most CPUs; pass --no-bf16 if training crawls")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(args.output_dir) / RUNS_DIR)
    if args.learning_rate is None:  # decided before, once (training.args.resolve_learning_rate)
        raise ValueError("learning_rate is unset; call training.args.resolve_learning_rate first")
    kwargs: dict[str, Any] = dict(
        output_dir=str(args.output_dir),
        num_train_epochs=float(args.num_epochs),
        max_steps=int(args.max_steps),
        per_device_train_batch_size=int(args.batch_size),
        per_device_eval_batch_size=int(args.batch_size),
        learning_rate=float(args.learning_rate),
        warmup_steps=float(args.warmup_ratio),  # transformers 5: a value < 1 is a fraction of the steps
        weight_decay=float(args.weight_decay),
        lr_scheduler_type="linear",
        gradient_accumulation_steps=int(args.gradient_accumulation_steps),
        eval_strategy="steps",
        eval_steps=int(args.eval_steps),
        save_strategy="steps",
        save_steps=int(args.save_steps),
        logging_strategy="steps",
        logging_steps=int(args.logging_steps),
        logging_first_step=True,
        metric_for_best_model=metric_for_best_model,
        greater_is_better=greater_is_better,
        report_to=["tensorboard"],
        seed=int(args.seed),
        data_seed=int(args.seed),
        use_cpu=device == "cpu",
        torch_compile=bool(args.compile),
        dataloader_num_workers=int(args.dataloader_num_workers),
        remove_unused_columns=False,  # our batches are dicts of the model's inputs already
        ddp_find_unused_parameters=False,
        ddp_backend="gloo" if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        disable_tqdm=False,
    )
    kwargs.update(fast)
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def effective_batch_size(args: TrainingCommonArgs, world_size: int) -> int:
    """Patients per optimiser update: per-device batch x accumulation x processes."""
    return int(args.batch_size) * int(args.gradient_accumulation_steps) * int(world_size)
