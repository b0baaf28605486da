"""Pretraining throughput: the project's fast path vs a naive `BertForMaskedLM` baseline, in one run.

    OMP_NUM_THREADS=2 python benchmarks/throughput.py --device cpu --presets small,large

(a) naive: `transformers.BertForMaskedLM`, every patient padded to --max-length, fp32, eager attention,
    logits over the whole vocabulary at every position.
(b) ours: `ExMedBertForPreTraining` fed by `TokenBudgetBatchSampler` + `PretrainCollator` (length buckets,
    masked-only MLM logits, SDPA), bf16 autocast on CUDA.
Both run forward + backward + AdamW step through `Trainer.training_step` on the same synthetic patients
(lognormal lengths: median ~80 tokens, tail to 512). Each measurement runs in its own subprocess so its
peak memory is its own. Also measures the data path alone (collate + mask, one core), from a
`PatientDataset` as the Trainer feeds it and from lists of item dicts.
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


def make_trainer(model, device: str, bf16: bool):
    """A Trainer whose `training_step` (forward, backward) and AdamW optimizer we drive step by step."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="bench-"), report_to=[], learning_rate=1e-4,
                             use_cpu=device == "cpu", bf16=bf16, disable_tqdm=True, save_strategy="no")
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
    for i in range(warmup + steps):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0, c0 = time.perf_counter(), time.process_time()
        batch, toks, pats = next(batches)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        trainer.training_step(model, batch)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens, patients = tokens + toks, patients + pats
    if device == "cuda":
        torch.cuda.synchronize()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    # CPU seconds are reported too: on a shared machine they are steadier than wall time.
    return dict(real_tokens_per_s=tokens / dt, patients_per_s=patients / dt, seconds=dt, cpu_seconds=cpu,
                real_tokens_per_cpu_s=tokens / cpu, steps=steps,
                peak_memory_mib=peak, peak_memory_kind="cuda allocated" if device == "cuda" else "process max RSS")


def print_profile(trainer, batches, device: str, steps: int = 3) -> None:
    """torch.profiler over a few more steps: the operators that took the most device (or CPU) time."""
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
    print(f"profile of {steps} steps, sorted by {key}:\n{table}", file=sys.stderr, flush=True)


def worker(kind: str, preset: str, a) -> dict:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    import exmed_bert.model  # noqa: F401  (registers the Auto* classes)
    from exmed_bert.model import ExMedBertConfig, ExMedBertForPreTraining, resolve_architecture
    from exmed_bert.training.batching import PretrainCollator, TokenBudgetBatchSampler

    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    arch = resolve_architecture(preset)
    loader_kw = dict(num_workers=a.workers, pin_memory=a.device == "cuda", persistent_workers=a.workers > 0,
                     **({"prefetch_factor": 4} if a.workers > 0 else {}))
    items = synthetic_items(a.patients, a.vocab_size, a.max_length)
    if kind == "naive":
        model = BertForMaskedLM(BertConfig(vocab_size=a.vocab_size, max_position_embeddings=a.max_length,
                                           attn_implementation="eager", **arch))
        model.config._attn_implementation = "eager"
        collate = PretrainCollator(vocab_size=a.vocab_size, seed=1)

        loader = DataLoader(items, batch_size=a.naive_batch_size, shuffle=False, drop_last=True,
                            collate_fn=NaivePadCollate(collate, a.max_length), **loader_kw)
        sampler = None
    else:
        model = ExMedBertForPreTraining(ExMedBertConfig(vocab_size=a.vocab_size, max_position_embeddings=a.max_length,
                                                        **arch))
        collate = PretrainCollator(vocab_size=a.vocab_size, seed=1, plos_threshold=7,
                                   pack_length=a.max_length if kind == "packed" else None)
        sampler = TokenBudgetBatchSampler([len(it["input_ids"]) for it in items], a.max_tokens_per_batch, seed=0,
                                          packing=kind == "packed")

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
    if a.compile and kind != "naive":
        model = torch.compile(model, dynamic=True)
    # the naive baseline stays fp32 (as the issue defines it); ours uses bf16 autocast on CUDA, as pretraining does
    trainer = make_trainer(model, a.device, bf16=a.device == "cuda" and kind != "naive")
    it = batches()
    res = run_steps(trainer, it, a.device, a.warmup, a.steps)
    if a.profile:
        print_profile(trainer, it, a.device)
    res.update(kind=kind, preset=preset, params=sum(p.numel() for p in model.parameters()))
    return res


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
    p.add_argument("--patients", type=int, default=4000)
    p.add_argument("--vocab-size", type=int, default=3000, help="~ the synthetic data's vocabulary")
    p.add_argument("--naive-batch-size", type=int, default=8, help="patients (rows of --max-length) per naive step")
    p.add_argument("--max-tokens-per-batch", type=int, default=8192, help="token budget of the fast path")
    p.add_argument("--kinds", default="naive,bucketed", help="naive, bucketed, packed")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast-path model")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes feeding the steps (default: 0 on cpu, 4 on cuda)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of a few extra steps")
    p.add_argument("--data-path-only", action="store_true", help="measure only the data path (collate + mask)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/throughput.json"))
    p.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.workers is None:
        a.workers = 4 if a.device == "cuda" else 0
    if a._worker:
        print("RESULT " + json.dumps(worker(a._worker[0], a._worker[1], a)))
        return 0

    passthrough = [x for x in (argv if argv is not None else sys.argv[1:])]
    rows = []
    for preset in ([] if a.data_path_only else a.presets.split(",")):
        for kind in a.kinds.split(","):
            print(f"[{preset}] {kind} ...", file=sys.stderr, flush=True)
            proc = subprocess.run([sys.executable, __file__, *passthrough, "--_worker", kind, preset],
                                  capture_output=True, text=True)
            if a.profile:
                print(proc.stderr[-12000:], file=sys.stderr, flush=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(line[7:]))
            r = rows[-1]
            print(f"[{preset}] {kind}: {r['real_tokens_per_s']:,.0f} real tokens/s, {r['patients_per_s']:,.1f} patients/s, "
                  f"peak {r['peak_memory_mib']:,.0f} MiB", file=sys.stderr, flush=True)
    dp = data_path(a)
    table = ["| preset | path | real tokens/s | tokens/CPU-s | patients/s | peak MiB | speed-up vs naive |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next((x for x in rows if x["preset"] == r["preset"] and x["kind"] == "naive"), None)
        if base is not None:
            r["speedup_vs_naive"] = r["real_tokens_per_s"] / base["real_tokens_per_s"]
            r["speedup_vs_naive_cpu_time"] = r["real_tokens_per_cpu_s"] / base["real_tokens_per_cpu_s"]
        table.append(f"| {r['preset']} | {r['kind']} | {r['real_tokens_per_s']:,.0f} | {r['real_tokens_per_cpu_s']:,.0f} | "
                     f"{r['patients_per_s']:,.1f} | "
                     f"{r['peak_memory_mib']:,.0f} | {r.get('speedup_vs_naive', float('nan')):.1f}x |")
    table.append("")
    table.append("data path (collate + mask, 1 thread): " + "; ".join(
        f"{k} {v['patients_per_cpu_s']:,.0f} patients/CPU-s ({v['patients_per_s']:,.0f}/s wall; "
        f"mask alone {v['mask_only_patients_per_cpu_s']:,.0f}/CPU-s, collate alone ~{v['collate_only_patients_per_cpu_s']:,.0f})"
        for k, v in dp.items()))
    print("\n".join(table))
    cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if l.startswith("Model name")), platform.processor())
    from exmed_bert.io import write_json

    write_json(a.out, dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), cpu=cpu,
                           device=a.device, omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                           settings={k: v for k, v in vars(a).items() if k != "_worker"}, results=rows,
                           data_path=dp, table="\n".join(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
