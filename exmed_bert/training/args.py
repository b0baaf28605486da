"""The typed settings of the two training stages: `PretrainArgs` (`pretrain-exmed-bert[-clinvec].py`,
config.yaml's `pretrain:`) and `FinetuneArgs` (`finetune-exmed-bert.py`, config.yaml's `finetune:`), both
built on `TrainingCommonArgs` (optimisation, device, checkpointing, tracking: one name and help text).

Light to import (no torch): config.yaml and --help read it. The stages are `training.pretrain.run(args)`
and `training.finetune.run(args)`; `training.runtime` turns the settings into `TrainingArguments`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from exmed_bert.clinvec.release import VOCAB_TYPES
from exmed_bert.clinvec.resize import METHODS as RESIZE_METHODS
from exmed_bert.errors import UserError
from exmed_bert.model.architecture import (ARCH_KEYS, ATTN_IMPLEMENTATIONS, INITIALIZATIONS, POOLING_TYPES,
                                           POSITION_TYPES, PRESETS, resolve_architecture)

DEVICES = ("auto", "cpu", "cuda")
SELECTION_METRICS = ("f1", "auroc", "auprc", "loss")  # fine-tuning's --metric-for-best-model
CLASS_WEIGHTS = ("none", "auto")
ON_TASK_ERROR = ("skip", "fail")
# Peak learning rates used when --learning-rate is not given: (pretraining, fine-tuning) per size preset.
# tiny and small were tuned on the generator's data (docs/EVALUATION.md, "Defaults that learn": the
# guide's 1e-4 / 1e-5 left a small model below the unigram baseline and at AUROC 0.64). medium and
# large are scaled down for their width, as is usual for larger transformers; they are not tuned here.
TUNED_LEARNING_RATES: dict[str, tuple[float, float]] = {
    "tiny": (1e-3, 5e-4), "small": (1e-3, 5e-4), "medium": (5e-4, 2e-4), "large": (2e-4, 1e-4)}


def _tuned_rates(column: int) -> str:
    """'tiny 0.001, small 0.001, ...': one stage's tuned rates, for --help."""
    return ", ".join(f"{preset} {rates[column]:g}" for preset, rates in TUNED_LEARNING_RATES.items())


@dataclass
class TrainingCommonArgs:
    output_dir: str = field(default="output/model", metadata={"help": "where checkpoints, logs and the best model go"})
    num_epochs: float = field(default=3.0, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=2, metadata={"help": "patients per batch and per device"})
    learning_rate: Optional[float] = field(default=None, metadata={
        "help": "peak learning rate (AdamW, linear decay); unset: the value tuned for the model size "
                f"({_tuned_rates(0)}; see docs/PRETRAINING.md)"})
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
    device: str = field(default="auto", metadata={"help": "where to train", "choices": list(DEVICES)})
    bf16: Optional[bool] = field(default=None, metadata={"help": "bfloat16 mixed precision (default: on with CUDA)"})
    tf32: Optional[bool] = field(default=None, metadata={
        "help": "TF32 tensor cores for the fp32 matmuls (all of them with --no-bf16) (default: on with an Ampere or "
                "newer CUDA GPU; CUDA only)"})
    attn_implementation: str = field(default="sdpa", metadata={
        "help": "attention kernel: sdpa, or flex_attention (FlexAttention with a block mask per batch; trains on "
                "CUDA only and without attention dropout, so pretraining needs --attention-probs-dropout-prob 0)",
        "choices": list(ATTN_IMPLEMENTATIONS)})
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
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise UserError(f"--learning-rate must be positive, got {self.learning_rate}")
        if self.num_epochs <= 0 and self.max_steps <= 0:
            raise UserError("--num-epochs must be positive (or set --max-steps)")
        if self.tf32 and self.device == "cpu":
            raise UserError("--tf32 applies to CUDA GPUs only; drop it with --device cpu")
        if self.attn_implementation == "flex_attention":
            device = self.device
            if device == "auto":
                # torch (2 s to import) loads only to see whether a GPU is there: reading config.yaml or
                # --help must not pay it for the default sdpa
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            check_attention(self.attn_implementation, device, getattr(self, "attention_probs_dropout_prob", 0.0))


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


@dataclass
class PretrainArgs(TrainingCommonArgs):
    """Pretrain ExMed-BERT (masked-code prediction, optional PLOS head) on a converted dataset."""

    # data
    data_dir: str = field(default="pretrain_stuff", metadata={
        "help": "folder with <dataset-name>_train.pt, <dataset-name>_val.pt and vocab.json (the converter's output)"})
    dataset_name: str = field(default="synthetic", metadata={"help": "file stem of the converted datasets"})
    packing: bool = field(default=False, metadata={
        "help": "with --max-tokens-per-batch: pack several patients into each row (attention stays within a "
                "patient) instead of padding each batch to its length bucket"})
    # architecture: a preset, then explicit flags override it; `validate` resolves the four sizes
    model_size: str = field(default="small", metadata={
        "help": "size preset (explicit architecture flags override it)", "choices": list(PRESETS)})
    num_hidden_layers: Optional[int] = field(default=None, metadata={"help": "transformer layers (default: preset)"})
    hidden_size: Optional[int] = field(default=None, metadata={"help": "hidden size (default: preset)"})
    intermediate_size: Optional[int] = field(default=None, metadata={"help": "feed-forward size (default: preset)"})
    num_attention_heads: Optional[int] = field(default=None, metadata={"help": "attention heads (default: preset)"})
    max_position_embeddings: int = field(default=512, metadata={"help": "largest visit index + 1 the model can see"})
    position_embedding_type: str = field(default="learned", metadata={
        "help": "visit positions: a learned table, or the fixed sin/cos table", "choices": list(POSITION_TYPES)})
    pooling: str = field(default="cls", metadata={
        "help": "one vector per patient for the PLOS head (and, by default, fine-tuning's classifier): the [CLS] "
                "token or the mean of the patient's tokens", "choices": list(POOLING_TYPES)})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "dropout on embeddings and hidden states"})
    attention_probs_dropout_prob: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    initialization: str = field(default="orthogonal", metadata={
        "help": "weight initialisation", "choices": list(INITIALIZATIONS)})
    time_buckets: int = field(default=0, metadata={
        "help": "embed how long before the history's last event each code happened, and [CLS] how long before "
                "the prediction date (pretraining: the day after) that event was, in this many log2-spaced buckets "
                "(0: off; 12 reaches ~3 years, see docs/MODEL.md); fine-tuning reads it from the model"})
    time2vec: bool = field(default=False, metadata={
        "help": "add Time2Vec embeddings of each code's calendar day and the patient's age that day (CORE-BEHRT's "
                "continuous time; [CLS] gets the prediction date); fine-tuning reads it from the model"})
    # objectives
    dynamic_masking: bool = field(default=False, metadata={"help": "mask different codes each epoch"})
    mlm_probability: float = field(default=0.15, metadata={"help": "share of codes masked per patient"})
    plos: bool = field(default=False, metadata={"help": "also predict a prolonged length of stay"})
    plos_threshold: int = field(default=7, metadata={"help": "a stay of this many days or more is prolonged"})
    plos_weight: float = field(default=1.0, metadata={"help": "loss = MLM + plos_weight x PLOS"})
    # ClinVec (in the guide's flat config.yaml: the clinvec_params mapping)
    use_clinvec: bool = field(default=False, metadata={"help": "initialise code embeddings from ClinVec"})
    clinvec_dir: str = field(default="ClinVec", metadata={"help": "folder with the ClinVec release files"})
    vocab_types: list[str] = field(default_factory=lambda: ["icd10cm", "atc", "cpt"], metadata={
        "help": "ClinVec vocabularies to use, comma-separated", "choices": list(VOCAB_TYPES)})
    use_hierarchical_init: bool = field(default=True, metadata={
        "help": "initialise codes missing from ClinVec from their nearest ancestor"})
    resize_method: str = field(default="auto", metadata={
        "help": "how ClinVec's 128-d vectors meet the hidden size", "choices": list(RESIZE_METHODS)})
    freeze_clinvec_steps: int = field(default=0, metadata={
        "help": "keep ClinVec-initialised rows fixed for this many updates"})

    def validate(self) -> None:
        self.validate_common()
        if not 0.0 < self.mlm_probability < 1.0:
            raise UserError(f"--mlm-probability must be between 0 and 1, got {self.mlm_probability}")
        if self.plos_threshold < 1:
            raise UserError(f"--plos-threshold must be at least 1 day, got {self.plos_threshold}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.max_position_embeddings < 2:
            raise UserError(f"--max-position-embeddings must be at least 2, got {self.max_position_embeddings}")
        if self.time_buckets < 0 or self.time_buckets == 1:
            raise UserError(f"--time-buckets must be 0 (off) or at least 2 (e.g. 12), got {self.time_buckets}")
        if self.freeze_clinvec_steps < 0:
            raise UserError(f"--freeze-clinvec-steps must be 0 or more, got {self.freeze_clinvec_steps}")
        if self.packing and not self.max_tokens_per_batch:
            raise UserError("--packing fills rows up to a token budget; add --max-tokens-per-batch (e.g. 16384)")
        resolve_learning_rate(self, self.model_size)
        # The architecture is decided here, once: the preset's sizes with the explicit ones over them. The
        # resolved numbers are what the run records (run_config.json) and the model is built from.
        arch = resolve_architecture(self.model_size, **{k: getattr(self, k) for k in ARCH_KEYS})
        for key, value in arch.items():
            setattr(self, key, value)


@dataclass
class FinetuneArgs(TrainingCommonArgs):
    """Fine-tune ExMed-BERT on a labelled task: train on train, select on val, report on test."""

    model_path: str = field(default="output/with_clinvec/checkpoint-best", metadata={
        "help": "pretrained model folder (config.json, model.safetensors, vocab.json), or the pretraining "
                "run folder holding checkpoint-best"})
    task_data: str = field(default="data/task_specific.csv", metadata={
        "help": "task labels: a CSV patient_id,label[,prediction_date], or MEDS label Parquet (a file or folder: "
                "subject_id, prediction_time, boolean_value / integer_value / categorical_value); histories are "
                "cut before the prediction date (CSV) or time (MEDS)"})
    output_dir: str = field(default="output/finetuned", metadata={
        "help": "checkpoints, TensorBoard logs, checkpoint-best/, metrics.json, predictions.csv, plots"})
    data_dir: str = field(default="pretrain_stuff", metadata={
        "help": "folder of the conversion the model was pretrained on; task datasets are built beside it"})
    input: str = field(default="data/synthetic_patients.json", metadata={
        "help": "patients JSON/JSONL, encoded with the model's vocabulary when --data-dir has no conversion"})
    split_seed: Optional[int] = field(default=None, metadata={
        "help": "seed of the patient-id hash that assigns train/val/test, separate from --seed (training); "
                "unset: the split of record, i.e. the --seed of the conversion in --data-dir or, when --input is "
                "encoded here, of the conversion the model was pretrained on; 42 when neither is known"})
    train_ratio: Optional[float] = field(default=None, metadata={
        "help": "share of patients in train (the rest is halved into val and test); unset: the conversion's "
                "--train-ratio as for --split-seed, 0.8 when none is known"})
    num_labels: int = field(default=2, metadata={"help": "2 for a binary task; more for multi-class"})
    metric_for_best_model: str = field(default="auroc", metadata={
        "help": "validation metric that picks checkpoint-best", "choices": list(SELECTION_METRICS)})
    learning_rate: Optional[float] = field(default=None, metadata={
        "help": "peak learning rate (AdamW, linear decay); unset: the value tuned for the pretrained model's size, "
                f"the preset nearest its hidden size ({_tuned_rates(1)}; the guide's 1e-5 suits large pretrained "
                "models)"})
    num_epochs: float = field(default=10.0, metadata={"help": "passes over the training patients"})
    batch_size: int = field(default=16, metadata={"help": "patients per batch and per device"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate on val every N updates (0: once per epoch)"})
    save_steps: int = field(default=0, metadata={"help": "write checkpoint-N every N updates (0: once per epoch)"})
    logging_steps: int = field(default=10, metadata={"help": "log the training loss every N updates"})
    early_stopping_patience: int = field(default=3, metadata={
        "help": "stop after this many evaluations without improvement (0: never)"})
    class_weights: str = field(default="none", metadata={
        "help": "weight the loss by inverse class frequency", "choices": list(CLASS_WEIGHTS)})
    freeze_encoder_epochs: int = field(default=0, metadata={
        "help": "train only the classifier head for this many epochs first"})
    freeze_encoder: bool = field(default=False, metadata={
        "help": "train only the classifier head; the pretrained encoder never changes (a probe)"})
    train_last_layers: Optional[int] = field(default=None, metadata={
        "help": "train only the top N encoder layers and the head; embeddings and lower layers stay frozen"})
    pooling: Optional[str] = field(default=None, metadata={
        "help": "one vector per patient for the classifier: [CLS] or the mean of its tokens (default: the "
                "pretrained model's)", "choices": list(POOLING_TYPES)})
    max_length: int = field(default=512, metadata={"help": "keep each patient's most recent tokens up to this"})
    on_task_error: str = field(default="skip", metadata={
        "help": "bad task CSV rows: skip them into task_rejected.csv, or stop", "choices": list(ON_TASK_ERROR)})
    n_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% CIs"})

    def validate(self) -> None:
        # 0 steps means "per epoch" here; the shared checks want positive numbers
        dataclasses.replace(self, eval_steps=max(self.eval_steps, 1),
                            save_steps=max(self.save_steps, 1)).validate_common()
        if self.eval_steps < 0 or self.save_steps < 0:
            raise UserError("--eval-steps and --save-steps must be 0 (per epoch) or positive")
        if self.num_labels < 2:
            raise UserError(f"--num-labels must be at least 2 (2 = binary), got {self.num_labels}")
        if self.max_length < 3:
            raise UserError(f"--max-length must be at least 3, got {self.max_length}")
        if self.early_stopping_patience < 0 or self.freeze_encoder_epochs < 0:
            raise UserError("--early-stopping-patience and --freeze-encoder-epochs must be 0 or more")
        check_freezing(self.freeze_encoder, self.train_last_layers, self.freeze_encoder_epochs)
        if self.train_ratio is not None and not 0.0 < self.train_ratio < 1.0:
            raise UserError(f"--train-ratio must be between 0 and 1 (exclusive), got {self.train_ratio}")
        if self.n_bootstrap < 1:
            raise UserError(f"--n-bootstrap must be at least 1, got {self.n_bootstrap}")


def check_freezing(freeze_encoder: bool, train_last_layers: int | None, freeze_encoder_epochs: int = 0,
                   num_layers: int | None = None) -> None:
    """One-line UserErrors for fine-tuning's freezing flags; `num_layers` (the model's) once it is loaded."""
    if freeze_encoder and train_last_layers is not None:
        raise UserError("--freeze-encoder and --train-last-layers exclude each other: --freeze-encoder trains the "
                        "head only, --train-last-layers N the top N layers and the head")
    if (freeze_encoder or train_last_layers is not None) and freeze_encoder_epochs > 0:
        raise UserError("--freeze-encoder-epochs unfreezes the whole encoder after its epochs; drop it with "
                        "--freeze-encoder or --train-last-layers")
    if train_last_layers is not None and train_last_layers < 1:
        raise UserError(f"--train-last-layers must be at least 1 (use --freeze-encoder to train the head only), "
                        f"got {train_last_layers}")
    if train_last_layers is not None and num_layers is not None and train_last_layers > num_layers:
        raise UserError(f"--train-last-layers {train_last_layers}: the model has only {num_layers} encoder layers")


def resolve_learning_rate(args: TrainingCommonArgs, preset: str) -> None:
    """Fill an unset --learning-rate with the rate tuned for a `preset`-sized model, pretraining's or
    fine-tuning's by the class of `args`: the one place the default is decided. Pretraining calls it from
    `validate` (preset: --model-size), fine-tuning once the pretrained model is loaded (the preset nearest
    its hidden size). The run records the value it used (run_config.json)."""
    if args.learning_rate is None:
        if preset.lower() not in TUNED_LEARNING_RATES:
            raise UserError(f"unknown model size {preset!r}; choose one of {', '.join(TUNED_LEARNING_RATES)}")
        pretraining, finetuning = TUNED_LEARNING_RATES[preset.lower()]
        args.learning_rate = finetuning if isinstance(args, FinetuneArgs) else pretraining


EMBED_SPLITS = ("all", "train", "val", "test")


@dataclass
class EmbedArgs:
    """Write one patient embedding per (subject, prediction time) of a task to Parquet: subject_id (int64 MEDS
    subject ids: integer ids as they are, the generator's P0042 as 42; other ids as text), prediction_time (timestamp[us]; a task CSV's prediction date at
    midnight), split, label, embedding (fixed_size_list<float32>[hidden size]): the pooled encoder output."""

    model_path: str = field(default="output/with_clinvec/checkpoint-best", metadata={
        "help": "a pretrained or fine-tuned model folder (config.json, model.safetensors, vocab.json), or the "
                "run folder holding checkpoint-best"})
    data_dir: str = field(default="pretrain_stuff", metadata={
        "help": "folder of the conversion the model was pretrained on; task datasets are built beside it"})
    task_data: str = field(default="data/task_specific.csv", metadata={
        "help": "task labels: a CSV patient_id,label[,prediction_date], or MEDS label Parquet (a file or folder)"})
    output: str = field(default="output/embeddings.parquet", metadata={"help": "the Parquet file to write"})
    split: str = field(default="all", metadata={"help": "which task split's rows to embed",
                                                "choices": list(EMBED_SPLITS)})
    pooling: Optional[str] = field(default=None, metadata={
        "help": "[CLS] or the mean of the patient's tokens (default: the model's classifier pooling)",
        "choices": list(POOLING_TYPES)})
    batch_size: int = field(default=64, metadata={"help": "patients per forward pass"})
    device: str = field(default="auto", metadata={"help": "where the model runs", "choices": list(DEVICES)})
    num_labels: int = field(default=2, metadata={"help": "classes of the task labels (as in fine-tuning)"})
    max_length: int = field(default=512, metadata={
        "help": "keep each patient's most recent tokens up to this (as fine-tuning's --max-length)"})

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise UserError(f"--batch-size must be a positive integer, got {self.batch_size}")
        if self.num_labels < 2:
            raise UserError(f"--num-labels must be at least 2 (2 = binary), got {self.num_labels}")
        if self.max_length < 3:
            raise UserError(f"--max-length must be at least 3, got {self.max_length}")
        if not str(self.output).endswith(".parquet"):
            raise UserError(f"--output {self.output}: give a .parquet file name")
