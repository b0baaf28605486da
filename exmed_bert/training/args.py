"""Settings shared by pretraining and fine-tuning, and the one place they become `TrainingArguments`.

`TrainingCommonArgs` is a dataclass mixin: a CLI's `Args` inherits it to get the optimisation, device,
checkpointing and tracking flags with identical names and help text in every stage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from exmed_bert.errors import UserError

RUNS_DIR = "runs"  # TensorBoard event files, as the guide shows (output/runs)
ATTN_CHOICES = ("sdpa", "flex_attention")  # transformers' `attn_implementation` names (exmed_bert/model/encoder.py)


@dataclass
class TrainingCommonArgs:
    output_dir: str = field(default="output/model", metadata={"help": "where checkpoints, logs and the best model go"})
    num_epochs: float = field(default=3.0, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=2, metadata={"help": "patients per batch and per device"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate (AdamW, linear decay)"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "fraction of the steps spent warming up the rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "batches summed into one update"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many updates (-1: run num_epochs)"})
    save_steps: int = field(default=500, metadata={"help": "write checkpoint-N every N updates"})
    eval_steps: int = field(default=500, metadata={"help": "evaluate on the validation set every N updates"})
    logging_steps: int = field(default=50, metadata={"help": "log the training loss every N updates"})
    seed: int = field(default=42, metadata={"help": "random seed (model init, batch order, masking)"})
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "a checkpoint-N folder to continue from, or 'auto' for the latest one "
                                         "in --output-dir"})
    device: str = field(default="auto", metadata={"help": "where to train", "choices": ["auto", "cpu", "cuda"]})
    bf16: Optional[bool] = field(default=None, metadata={"help": "bfloat16 mixed precision (default: on with CUDA)"})
    tf32: Optional[bool] = field(default=None, metadata={
        "help": "TF32 tensor cores for the fp32 matmuls (all of them with --no-bf16) (default: on with an Ampere or "
                "newer CUDA GPU; CUDA only)"})
    attn_implementation: str = field(default="sdpa", metadata={
        "help": "attention kernel: sdpa, or flex_attention (FlexAttention with a block mask per batch; trains on "
                "CUDA only and without attention dropout, so pretraining needs --attention-probs-dropout-prob 0)",
        "choices": list(ATTN_CHOICES)})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    max_tokens_per_batch: Optional[int] = field(
        default=None, metadata={"help": "pack batches up to this many tokens instead of --batch-size patients"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "background processes loading batches"})
    mlflow_tracking_uri: Optional[str] = field(
        default=None, metadata={"help": "MLflow server to log params, metrics and the model to (off when unset)"})
    mlflow_experiment_name: str = field(default="exmed-bert", metadata={"help": "MLflow experiment name"})

    def validate_common(self) -> None:
        for name in ("batch_size", "gradient_accumulation_steps", "save_steps", "eval_steps", "logging_steps"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch <= 0:
            raise UserError(f"--max-tokens-per-batch must be positive, got {self.max_tokens_per_batch}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise UserError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.learning_rate <= 0:
            raise UserError(f"--learning-rate must be positive, got {self.learning_rate}")
        if self.num_epochs <= 0 and self.max_steps <= 0:
            raise UserError("--num-epochs must be positive (or set --max-steps)")
        if self.tf32 and self.device == "cpu":
            raise UserError("--tf32 applies to CUDA GPUs only; drop it with --device cpu")
        if self.attn_implementation == "flex_attention":
            check_attention(self.attn_implementation, resolve_device(self.device),
                            getattr(self, "attention_probs_dropout_prob", 0.0))


def check_attention(attn_implementation: str, device: str, attention_dropout: float = 0.0) -> None:
    """FlexAttention trains only where torch has its backward (CUDA) and has no attention dropout."""
    if attn_implementation != "flex_attention":
        return
    if device != "cuda":
        raise UserError(f"--attn-implementation flex_attention trains on CUDA only (torch has no FlexAttention "
                        f"backward on {device}); use --attn-implementation sdpa")
    if attention_dropout > 0:
        raise UserError(f"--attn-implementation flex_attention has no attention dropout; add "
                        f"--attention-probs-dropout-prob 0 (now {attention_dropout}) or use --attn-implementation sdpa")


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
    import torch

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
        from transformers.trainer_utils import get_last_checkpoint

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
    import pickle

    import torch
    from transformers.trainer_pt_utils import safe_globals  # numpy arrays in rng_state, as the Trainer allows

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
    from transformers import TrainingArguments
    from transformers.utils import is_torch_tf32_available

    check_attention(args.attn_implementation, device, getattr(args, "attention_probs_dropout_prob", 0.0))
    fast = fast_path_kwargs(device, args.bf16, args.tf32, tf32_capable=device == "cuda" and is_torch_tf32_available())
    if fast["bf16"] and device == "cpu":
        print("note: --bf16 on CPU is slow on most CPUs; pass --no-bf16 if training crawls")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(args.output_dir) / RUNS_DIR)
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
