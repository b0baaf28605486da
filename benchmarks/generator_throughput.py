"""Throughput and peak memory of the synthetic generator: patients per second and peak RSS.

    python benchmarks/generator_throughput.py --num-patients 100000 [--jsonl] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)   # macOS reports bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-patients", "-n", type=int, default=100_000)
    ap.add_argument("--jsonl", action="store_true", help="write JSONL instead of JSON")
    ap.add_argument("--keep", help="write into this folder instead of a temporary one")
    args = ap.parse_args()

    from exmed_bert.synthetic.cohort import Params, generate

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        out = folder / ("bench.jsonl" if args.jsonl else "bench.json")
        t0, c0 = time.perf_counter(), time.process_time()
        meta = generate(Params(args.num_patients, 0.01, 42, "2020-01-01", "2024-12-31", 365),
                        str(out), str(folder / "bench_task.csv"), progress=False)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        size_mb = out.stat().st_size / 2**20
    rss = peak_rss_mb()
    print(f"{args.num_patients} patients in {secs:.1f} s = {args.num_patients / secs:,.0f} patients/s; "
          f"peak RSS {'n/a' if rss is None else f'{rss:.0f} MB'}; output {size_mb:.0f} MB; "
          f"{meta['counts']['codes'] / secs:,.0f} codes/s")
    # On a shared machine the wall clock includes waiting for a core; CPU time is what one core costs.
    print(f"CPU time {cpu:.1f} s = {args.num_patients / cpu:,.0f} patients per CPU-second (one core)")
    print(f"python {platform.python_version()} on {platform.machine()} {platform.processor() or ''} "
          f"({os.cpu_count()} logical CPUs), {platform.platform()}")


if __name__ == "__main__":
    main()
