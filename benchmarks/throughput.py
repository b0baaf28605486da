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
switches come from `exmed_bert.training.runtime.fast_path_kwargs`, as in the real CLI. Also measures the data
path alone (collate + mask, one core), from a `PatientDataset` as the Trainer feeds it and from lists of
item dicts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from step_timing import KINDS, PRECISIONS, synthetic_items, worker  # noqa: E402  (beside this file)


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


def data_path(a) -> dict:
    """Collate + mask alone, one thread: patients/s over a pass of token-budget batches.

    "dataset" is the Trainer path: the DataLoader's batched fetch on a `PatientDataset` gives the collator
    an `IndexBatch` (fetch included in the timing); "items" hands it lists of per-patient dicts (any other
    Dataset). Also times `mask_tokens` alone, replaying the exact calls the collator made, so the split
    between collation and masking is visible.
    """
    import torch

    from exmed_bert.data.masking import mask_tokens
    from exmed_bert.data.collate import Collator as PretrainCollator
    from exmed_bert.data.collate import batched_view
    from exmed_bert.data.sampler import TokenBudgetBatchSampler

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
