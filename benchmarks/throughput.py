"""Pretraining throughput: the project's fast path vs a naive `BertForMaskedLM` baseline, in one run.

    OMP_NUM_THREADS=2 python benchmarks/throughput.py --device cpu --presets small,large

(a) naive: `transformers.BertForMaskedLM`, every patient padded to --max-length, fp32, eager attention,
    logits over the whole vocabulary at every position.
(b) ours: `ExMedBertForPreTraining` fed by `TokenBudgetBatchSampler` + `PretrainCollator` (length buckets,
    masked-only MLM logits). Kinds: bucketed, packed (SDPA, boolean masks), bucketed-flex, packed-flex
    (FlexAttention with a BlockMask; no attention dropout, so those rows run with 0; CUDA only: torch has no
    FlexAttention backward on CPU, so on CPU they are recorded as skipped).
Both run forward + backward + AdamW step through `Trainer.training_step` on the same synthetic patients
(lognormal lengths: median ~80 tokens, tail to 512). --precisions: fp32 (IEEE), tf32 (fp32 weights, TF32
matmuls) and bf16 (autocast, TF32 for what stays fp32, as the CLI on CUDA), each measured in turn in the
same subprocess on the same batches, one subprocess per (preset, kind), so peak GPU memory is per row
(on CPU the peak RSS is the process's, cumulative over its precisions). The optimizer and precision
switches come from `exmed_bert.training.args.fast_path_kwargs`, as in the real CLI. Also measures the data
path alone (collate + mask, one core), from a `PatientDataset` as the Trainer feeds it and from lists of
item dicts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def dataset_of(items: list[dict]):
    """The same patients as a `PatientDataset` (flat arrays + offsets), as the Trainer path reads them."""
    import torch

    from exmed_bert.data.dataset import PatientDataset, build_dataset_dict

    n = len(items)
    lengths = np.array([len(it["input_ids"]) for it in items])
    cat = {k: torch.cat([it[k] for it in items]).numpy() for k in ("input_ids", "token_type_ids", "position_ids", "age_ids")}
    parts = dict(cat, days=np.zeros(int(lengths.sum())), offsets=np.concatenate([[0], np.cumsum(lengths)]),
                 sex=[it["sex"] for it in items], birth_days=np.zeros(n), los_offsets=np.arange(n + 1),
                 los_days=[it["plos_los"] for it in items])
    return PatientDataset(build_dataset_dict(parts, [str(i) for i in range(n)]))


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

    from exmed_bert.training.args import fast_path_kwargs

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


def worker(kind: str, preset: str, a) -> list[dict]:
    """One (preset, kind): the same batches timed once per precision, a fresh seeded model each time."""
    import gc

    import torch
    from torch.utils.data import DataLoader
    from transformers import BertConfig, BertForMaskedLM

    import exmed_bert.model  # noqa: F401  (registers the Auto* classes)
    from exmed_bert.model import ExMedBertConfig, ExMedBertForPreTraining, resolve_architecture
    from exmed_bert.training.batching import PretrainCollator, TokenBudgetBatchSampler

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

    rows = []
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
        rows.append(row)
        gc.collect()
        if a.device == "cuda":
            torch.cuda.empty_cache()
    return rows


def _dynamo_graphs() -> int | None:
    """Graphs torch.compile built so far in this process (flex kernels, --compile), or None if unknown."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except (ImportError, KeyError, TypeError):
        return None


def data_path(a) -> dict:
    """Collate + mask alone, one thread: patients/s over a pass of token-budget batches.

    "dataset" is the Trainer path: the DataLoader's batched fetch on a `PatientDataset` gives the collator
    an `IndexBatch` (fetch included in the timing); "items" hands it lists of per-patient dicts (any other
    Dataset). Also times `mask_tokens` alone, replaying the exact calls the collator made, so the split
    between collation and masking is visible.
    """
    import torch

    from exmed_bert.data.masking import mask_tokens
    from exmed_bert.training.batching import PretrainCollator, TokenBudgetBatchSampler, batched_view

    torch.set_num_threads(1)
    items = synthetic_items(max(a.patients, 20000), a.vocab_size, a.max_length, seed=1)
    ds = dataset_of(items)
    calls = []

    def recording_mask(*args, **kw):
        calls.append((args, kw))
        return mask_tokens(*args, **kw)

    collate = PretrainCollator(vocab_size=a.vocab_size, seed=1, plos_threshold=7, epoch=0, mask_fn=recording_mask)
    view = batched_view(ds, collate)
    out = {}
    for source in ("dataset", "items"):
        for layout, packing in (("bucketed", False), ("packed", True)):
            sampler = TokenBudgetBatchSampler(ds.lengths, a.max_tokens_per_batch, seed=0, packing=packing)
            collate.pack_length = a.max_length if packing else None
            batches = list(sampler)
            if source == "items":
                batches = [[items[i] for i in idx] for idx in batches]
            calls.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            for b in batches:
                collate(view.__getitems__(b) if source == "dataset" else b)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            c0 = time.process_time()
            for args, kw in calls:
                mask_tokens(*args, **kw)
            mask_cpu = time.process_time() - c0
            # one thread, so CPU time is the time on one core even when other processes share the machine
            out[f"{layout}/{source}"] = dict(
                patients_per_s=len(items) / wall, patients_per_cpu_s=len(items) / cpu,
                mask_only_patients_per_cpu_s=len(items) / mask_cpu,
                collate_only_patients_per_cpu_s=len(items) / max(cpu - mask_cpu, 1e-9), batches=len(batches))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--presets", default="small,large")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--flex-warmup", type=int, default=8,
                   help="warmup steps at least, for FlexAttention and --compile rows (compilation, then one "
                        "recompilation with dynamic shapes)")
    p.add_argument("--patients", type=int, default=4000)
    p.add_argument("--vocab-size", type=int, default=3000, help="~ the synthetic data's vocabulary")
    p.add_argument("--naive-batch-size", type=int, default=8, help="patients (rows of --max-length) per naive step")
    p.add_argument("--max-tokens-per-batch", type=int, default=8192, help="token budget of the fast path")
    p.add_argument("--kinds", default="naive,bucketed", help=f"comma-separated: {', '.join(KINDS)}")
    p.add_argument("--precisions", default=None,
                   help="comma-separated: fp32 (IEEE), tf32 (TF32 matmuls), bf16 (autocast, as the CLI on CUDA); "
                        "default fp32 on cpu, fp32,bf16 on cuda")
    p.add_argument("--attention-dropout", type=float, default=0.1,
                   help="attention-probability dropout of the SDPA rows (FlexAttention rows always run with 0)")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast-path model")
    p.add_argument("--flex-dynamic", default="true", choices=["true", "auto"],
                   help="how the CUDA FlexAttention kernel is compiled: dynamic=True (the model's default) or "
                        "torch's automatic dynamic shapes (static first, dynamic after a recompilation)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes feeding the steps (default: 0 on cpu, 4 on cuda)")
    p.add_argument("--worker-timeout", type=float, default=None,
                   help="seconds one (preset, kind) subprocess may take; it is recorded as failed after that")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock seconds for all measurements; (preset, kind) pairs that no longer fit are "
                        "recorded as skipped (the JSON is rewritten after each one, so a killed run keeps its rows)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of a few extra steps")
    p.add_argument("--profile-dir", default=None, help="also write each profile table to a file in this folder")
    p.add_argument("--no-data-path", action="store_true", help="skip the data-path measurement (collate + mask)")
    p.add_argument("--data-path-only", action="store_true", help="measure only the data path (collate + mask)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/throughput.json"))
    p.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.workers is None:
        a.workers = 4 if a.device == "cuda" else 0
    if a.precisions is None:
        a.precisions = "fp32,bf16" if a.device == "cuda" else "fp32"
    bad = [k for k in a.kinds.split(",") if k not in KINDS] + [x for x in a.precisions.split(",") if x not in PRECISIONS]
    if bad:
        p.error(f"unknown kind or precision: {', '.join(bad)}")
    if a._worker:
        for row in worker(a._worker[0], a._worker[1], a):
            print("RESULT " + json.dumps(row), flush=True)
        return 0

    passthrough = [x for x in (argv if argv is not None else sys.argv[1:])]
    rows: list[dict] = []
    start = time.perf_counter()
    jobs = [(preset, kind) for preset in ([] if a.data_path_only else a.presets.split(",")) for kind in a.kinds.split(",")]
    for preset, kind in jobs:
        left = None if a.budget_s is None else a.budget_s - (time.perf_counter() - start)
        if left is not None and left < 20:
            print(f"[{preset}] {kind}: not run, --budget-s {a.budget_s:.0f} spent", file=sys.stderr, flush=True)
            rows += [dict(kind=kind, preset=preset, precision=x, layout=KINDS[kind][0], attention=KINDS[kind][1],
                          error="skipped: --budget-s spent") for x in a.precisions.split(",")]
            continue
        print(f"[{preset}] {kind} ({a.precisions}) ...", file=sys.stderr, flush=True)
        limits = [x for x in (a.worker_timeout, left) if x is not None]
        rows += run_worker(passthrough, kind, preset, a, min(limits) if limits else None)
        save(a, rows, None, final=False)  # a killed run keeps what it measured
    dp = None if (a.no_data_path and not a.data_path_only) else data_path(a)
    table = save(a, rows, dp, final=True)
    print("\n".join(table))
    failed = [r for r in rows if "error" in r and not r["error"].startswith("skipped")]
    return 1 if failed else 0


def save(a, rows: list[dict], dp: dict | None, final: bool) -> list[str]:
    """Speed-ups, the markdown tables and the JSON file (rewritten after every worker); returns the tables."""
    ok = [r for r in rows if "error" not in r]
    for r in ok:
        base = {x["precision"]: x for x in ok if x["preset"] == r["preset"] and x["kind"] == "naive"}
        if "fp32" in base:  # the reference: a padded fp32 BertForMaskedLM
            r["speedup_vs_naive_fp32"] = r["real_tokens_per_s"] / base["fp32"]["real_tokens_per_s"]
            r["speedup_vs_naive_fp32_cpu_time"] = r["real_tokens_per_cpu_s"] / base["fp32"]["real_tokens_per_cpu_s"]
        if r["precision"] in base:
            r["speedup_vs_naive_same_precision"] = r["real_tokens_per_s"] / base[r["precision"]]["real_tokens_per_s"]
    table = format_tables(rows)
    if dp is not None:
        table.append("")
        table.append("data path (collate + mask, 1 thread): " + "; ".join(
            f"{k} {v['patients_per_cpu_s']:,.0f} patients/CPU-s ({v['patients_per_s']:,.0f}/s wall; "
            f"mask alone {v['mask_only_patients_per_cpu_s']:,.0f}/CPU-s, collate alone ~{v['collate_only_patients_per_cpu_s']:,.0f})"
            for k, v in dp.items()))
    cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if l.startswith("Model name")), platform.processor())
    from exmed_bert.io import write_json

    write_json(a.out, dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), complete=final, cpu=cpu,
                           device=a.device, gpu=gpu_name(a.device), versions=versions(),
                           omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                           settings={k: v for k, v in vars(a).items() if k != "_worker"}, results=rows,
                           data_path=dp, table="\n".join(table)))
    return table


def run_worker(passthrough: list[str], kind: str, preset: str, a, timeout: float | None) -> list[dict]:
    """One (preset, kind) in its own subprocess; a crash or a timeout becomes error rows, never the end of the run."""
    cmd = [sys.executable, __file__, *passthrough, "--_worker", kind, preset]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        stdout, stderr, why = proc.stdout, proc.stderr, f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        why = f"timeout after {timeout:.0f} s"
    if a.profile:
        print(stderr[-12000:], file=sys.stderr, flush=True)
    rows = [json.loads(l[7:]) for l in stdout.splitlines() if l.startswith("RESULT ")]
    done = {r["precision"] for r in rows}
    missing = [x for x in a.precisions.split(",") if x not in done]
    if missing:
        print(stderr[-3000:], file=sys.stderr, flush=True)
        rows += [dict(kind=kind, preset=preset, precision=x, layout=KINDS[kind][0], attention=KINDS[kind][1],
                      error=f"worker failed ({why})") for x in missing]
    for r in rows:
        if "error" in r:
            # FlexAttention rows on CPU are expected to be skipped, not failures
            if "no backward on" in r["error"] or "needs an Ampere" in r["error"]:
                r["error"] = "skipped: " + r["error"].split(": ", 1)[-1]
            print(f"[{preset}] {kind} {r['precision']}: {r['error']}", file=sys.stderr, flush=True)
        else:
            print(f"[{preset}] {kind} {r['precision']}: {r['real_tokens_per_s']:,.0f} real tokens/s, "
                  f"{r['patients_per_s']:,.1f} patients/s, peak {r['peak_memory_mib']:,.0f} MiB", file=sys.stderr, flush=True)
    return rows


def format_tables(rows: list[dict]) -> list[str]:
    """Markdown: one row per measurement, then real tokens/s with the precisions side by side."""
    table = ["| preset | path | attention | precision | real tokens/s | tokens/CPU-s | patients/s | peak MiB | "
             "vs naive fp32 | vs naive, same precision |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            table.append(f"| {r['preset']} | {r['kind']} | {r['attention']} | {r['precision']} | {r['error']} | | | | | |")
            continue
        table.append(f"| {r['preset']} | {r['kind']} | {r['attention']} | {r['precision']} | {r['real_tokens_per_s']:,.0f} | "
                     f"{r['real_tokens_per_cpu_s']:,.0f} | {r['patients_per_s']:,.1f} | {r['peak_memory_mib']:,.0f} | "
                     f"{_times(r.get('speedup_vs_naive_fp32'))} | {_times(r.get('speedup_vs_naive_same_precision'))} |")
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    if len(precisions) > 1:
        table += ["", "| preset | path | " + " | ".join(f"{x} tokens/s" for x in precisions) + " | "
                  + " | ".join(f"{x} peak MiB" for x in precisions) + " |",
                  "|---|---|" + "---|" * (2 * len(precisions))]
        cell = {(r["preset"], r["kind"], r["precision"]): r for r in rows}
        for preset, kind in dict.fromkeys((r["preset"], r["kind"]) for r in rows):
            got = [cell.get((preset, kind, x), {}) for x in precisions]
            speed = [f"{g['real_tokens_per_s']:,.0f}" if "real_tokens_per_s" in g else "-" for g in got]
            peak = [f"{g['peak_memory_mib']:,.0f}" if "peak_memory_mib" in g else "-" for g in got]
            table.append(f"| {preset} | {kind} | " + " | ".join(speed) + " | " + " | ".join(peak) + " |")
    return table


def _times(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def gpu_name(device: str) -> str | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.get_device_name()


def versions() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


if __name__ == "__main__":
    sys.exit(main())
