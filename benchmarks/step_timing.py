"""One benchmark measurement: a (preset, kind) trained step by step through `Trainer.training_step`, once per precision.

Run by benchmarks/throughput.py in a subprocess per (preset, kind) (`--_worker KIND PRESET`); holds the synthetic
patients, the naive baseline's padding, the step timer and the profiler table.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

def synthetic_items(n: int, vocab_size: int, max_length: int, seed: int = 0) -> list[dict]:
    """Dataset-like items with generator-like lengths: lognormal, median ~80 tokens, clipped to max_length."""
    import torch

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(80), 0.75, n).astype(np.int64), 4, max_length)
    ids = rng.integers(5, vocab_size, int(lengths.sum()), dtype=np.int32)
    items, start = [], 0
    for i, t in enumerate(lengths.tolist()):
        x = torch.from_numpy(ids[start:start + t].copy())
        x[0] = 2  # [CLS]
        visits = torch.arange(t, dtype=torch.int16) // 4
        items.append(dict(input_ids=x, token_type_ids=(1 + torch.arange(t) % 3).to(torch.int8),
                          position_ids=visits, age_ids=(30 + visits // 10).to(torch.int16), sex=1 + i % 2,
                          plos_los=int(rng.integers(0, 14)), index=i))
        start += t
    return items


KINDS = {  # kind -> (layout, attention implementation)
    "naive": ("naive", "eager"), "bucketed": ("bucketed", "sdpa"), "packed": ("packed", "sdpa"),
    "bucketed-flex": ("bucketed", "flex_attention"), "packed-flex": ("packed", "flex_attention"),
}
PRECISIONS = ("fp32", "tf32", "bf16")


def tf32_capable(device: str) -> bool:
    from transformers.utils import is_torch_tf32_available

    return device == "cuda" and is_torch_tf32_available()


def set_tf32(on: bool) -> str:
    """Switch TF32 for CUDA fp32 matmuls; returns the setting read back. Set here per measurement rather than by
    `TrainingArguments(tf32=...)`, whose `enable_tf32` is cached per value and so cannot switch back and forth."""
    import torch

    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch 2.9+: mixing this with allow_tf32 is an error
        matmul.fp32_precision = "tf32" if on else "ieee"
        return matmul.fp32_precision
    matmul.allow_tf32 = on
    return "tf32" if matmul.allow_tf32 else "ieee"


def make_trainer(model, device: str, precision: str):
    """A Trainer whose `training_step` (forward, backward) and AdamW optimizer we drive step by step, with the
    precision and optimizer switches the CLI would use on this device."""
    from transformers import Trainer, TrainingArguments

    from exmed_bert.training.runtime import fast_path_kwargs

    fast = fast_path_kwargs(device, bf16=precision == "bf16", tf32_capable=tf32_capable(device))
    fast.pop("tf32", None)  # see set_tf32
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="bench-"), report_to=[], learning_rate=1e-4,
                             use_cpu=device == "cpu", disable_tqdm=True, save_strategy="no", **fast)
    trainer = Trainer(model=model, args=args)
    trainer.model_accepts_loss_kwargs = False  # as ExMedTrainer: per-batch mean loss
    trainer.current_gradient_accumulation_steps = 1  # normally set inside Trainer.train()'s loop
    trainer.create_optimizer()
    # as Trainer.train() does: accelerate places the model and, with bf16, wraps its forward in autocast
    trainer.prepared_model = trainer.accelerator.prepare_model(trainer.model)
    return trainer


class Counting:
    """Collate, then note the batch's real tokens and patients (popped before the model sees the batch)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, chunk):
        b = self.collate(chunk)
        b["_tokens"], b["_patients"] = b["attention_mask"].sum(), len(chunk)
        return b


class NaivePadCollate(Counting):
    """The same masking, then every row padded to max_length like run_mlm.py, BERT's inputs only."""

    def __init__(self, collate, max_length: int):
        super().__init__(collate)
        self.max_length = max_length

    def __call__(self, chunk):
        import torch

        b = self.collate(chunk)
        pad = self.max_length - b["input_ids"].shape[1]
        out = {k: torch.nn.functional.pad(b[k], (0, pad), value=-100 if k == "labels" else 0)
               for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}
        out["token_type_ids"] = out["token_type_ids"].clamp(max=1)  # BERT has 2 segment types
        out["_tokens"], out["_patients"] = b["attention_mask"].sum(), len(chunk)
        return out


def run_steps(trainer, batches, device: str, warmup: int, steps: int) -> dict:
    """Time `steps` full training steps after `warmup`; `batches` yields CPU batches (collation is timed)."""
    import torch

    model = trainer.prepared_model.train()
    opt = trainer.optimizer
    tokens = patients = 0
    t0 = None
    warm_s, step_s = [], []  # warmup steps synchronised (compilation shows there); timed steps are not
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0, c0 = time.perf_counter(), time.process_time()
        ts = time.perf_counter()
        batch, toks, pats = next(batches)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        trainer.training_step(model, batch)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens, patients = tokens + toks, patients + pats
            step_s.append(time.perf_counter() - ts)  # host time; a recompilation inside the timed steps shows as a spike
        else:
            if device == "cuda":
                torch.cuda.synchronize()
            warm_s.append(time.perf_counter() - ts)
    if device == "cuda":
        torch.cuda.synchronize()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    res = dict(real_tokens_per_s=tokens / dt, patients_per_s=patients / dt, seconds=dt, cpu_seconds=cpu,
               real_tokens_per_cpu_s=tokens / max(cpu, 1e-9), steps=steps, tokens_per_step=tokens / max(steps, 1),
               warmup_step_seconds=[round(x, 4) for x in warm_s],
               max_timed_step_host_s=max(step_s, default=0.0), median_timed_step_host_s=float(np.median(step_s or [0.0])))
    # CPU seconds are reported too: on a shared machine they are steadier than wall time.
    if device == "cuda":
        res.update(peak_memory_mib=torch.cuda.max_memory_allocated() / 2**20,
                   peak_reserved_mib=torch.cuda.max_memory_reserved() / 2**20, peak_memory_kind="cuda allocated")
    else:
        res.update(peak_memory_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   peak_memory_kind="process max RSS")
    return res


def print_profile(trainer, batches, device: str, steps: int = 3, out: Path | None = None) -> None:
    """torch.profiler over a few more steps: the operators that took the most device (or CPU) time; the
    table also goes to `out` when given."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        run_steps(trainer, batches, device, 0, steps)
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=key, row_limit=25)
    except (KeyError, AttributeError, ValueError):
        table = prof.key_averages().table(sort_by="self_cuda_time_total" if device == "cuda" else key, row_limit=25)
    text = f"profile of {steps} steps, sorted by {key}:\n{table}"
    print(text, file=sys.stderr, flush=True)
    if out is not None:
        from exmed_bert.io import write_text

        write_text(out, text + "\n")


def worker(kind: str, preset: str, a) -> Iterator[dict]:
    """One (preset, kind): the same batches timed once per precision, a fresh seeded model each time. Yields each
    precision's row as soon as it is measured, so a worker killed by its timeout still reports those."""
    import gc

    import torch
    from torch.utils.data import DataLoader
    from transformers import BertConfig, BertForMaskedLM

    import exmed_bert.model.modeling  # noqa: F401  (registers the Auto* classes)
    from exmed_bert.data.collate import Collator as PretrainCollator
    from exmed_bert.data.sampler import TokenBudgetBatchSampler
    from exmed_bert.model.architecture import resolve_architecture
    from exmed_bert.model.modeling import ExMedBertConfig, ExMedBertForPreTraining

    from exmed_bert.model import encoder

    encoder.FLEX_COMPILE_DYNAMIC = True if a.flex_dynamic == "true" else None
    layout, attn = KINDS[kind]
    arch = resolve_architecture(preset)
    # FlexAttention has no dropout on attention probabilities; its rows (and --attention-dropout) say so
    attn_dropout = 0.0 if attn == "flex_attention" else a.attention_dropout
    loader_kw = dict(num_workers=a.workers, pin_memory=a.device == "cuda", persistent_workers=a.workers > 0,
                     **({"prefetch_factor": 4} if a.workers > 0 else {}))
    items = synthetic_items(a.patients, a.vocab_size, a.max_length)
    if layout == "naive":
        collate = PretrainCollator(vocab_size=a.vocab_size, seed=1)
        loader = DataLoader(items, batch_size=a.naive_batch_size, shuffle=False, drop_last=True,
                            collate_fn=NaivePadCollate(collate, a.max_length), **loader_kw)
        sampler = None
    else:
        collate = PretrainCollator(vocab_size=a.vocab_size, seed=1, plos_threshold=7,
                                   pack_length=a.max_length if layout == "packed" else None)
        sampler = TokenBudgetBatchSampler([len(it["input_ids"]) for it in items], a.max_tokens_per_batch, seed=0,
                                          packing=layout == "packed")
        loader = DataLoader(items, batch_sampler=sampler, collate_fn=Counting(collate), **loader_kw)

    def batches():
        """Batches as the Trainer gets them: a DataLoader (workers and pinned memory when --workers > 0)."""
        epoch = 0
        while True:
            if sampler is not None:
                sampler.set_epoch(epoch)
            for b in loader:
                yield b, int(b.pop("_tokens")), int(b.pop("_patients"))
            epoch += 1

    def build():
        torch.manual_seed(0)
        if layout == "naive":
            model = BertForMaskedLM(BertConfig(vocab_size=a.vocab_size, max_position_embeddings=a.max_length,
                                               attn_implementation="eager", **arch))
            model.config._attn_implementation = "eager"
            return model
        model = ExMedBertForPreTraining(ExMedBertConfig(
            vocab_size=a.vocab_size, max_position_embeddings=a.max_length, attention_probs_dropout_prob=attn_dropout,
            attn_implementation=attn, **arch))
        return torch.compile(model, dynamic=True) if a.compile else model

    for precision in a.precisions.split(","):
        row = dict(kind=kind, layout=layout, attention=attn, preset=preset, precision=precision, flex_dynamic=a.flex_dynamic,
                   attention_dropout=attn_dropout if layout != "naive" else 0.1, compiled=a.compile and layout != "naive")
        try:
            if precision == "tf32" and not tf32_capable(a.device):
                raise RuntimeError("tf32 needs an Ampere or newer CUDA GPU")
            if attn == "flex_attention" and a.device != "cuda":
                raise RuntimeError(f"FlexAttention has no backward on {a.device} in torch {torch.__version__}")
            if a.device == "cuda":
                row["matmul_fp32_precision"] = set_tf32(precision != "fp32" and tf32_capable(a.device))
            model = build()
            trainer = make_trainer(model, a.device, precision)
            row["optim"] = str(trainer.args.optim.value if hasattr(trainer.args.optim, "value") else trainer.args.optim)
            warmup = max(a.warmup, a.flex_warmup) if (attn == "flex_attention" or a.compile) else a.warmup
            it = batches()  # from the first batch again: every precision sees the same batches
            row.update(run_steps(trainer, it, a.device, warmup, a.steps), warmup_steps=warmup,
                       params=sum(p.numel() for p in model.parameters()))
            if a.profile:
                out = Path(a.profile_dir) / f"profile_{preset}_{kind}_{precision}.txt" if a.profile_dir else None
                print_profile(trainer, it, a.device, out=out)
            graphs = _dynamo_graphs()
            if graphs is not None:
                row["dynamo_unique_graphs_so_far"] = graphs
            del model, trainer
        except Exception as e:  # one failed precision (an OOM, a compile error) must not cost the others
            row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
            print(f"[{preset}] {kind} {precision}: {row['error']}", file=sys.stderr, flush=True)
        gc.collect()
        if a.device == "cuda":
            torch.cuda.empty_cache()
        yield row


def _dynamo_graphs() -> int | None:
    """Graphs torch.compile built so far in this process (flex kernels, --compile), or None if unknown."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except (ImportError, KeyError, TypeError):
        return None
