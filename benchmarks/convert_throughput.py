"""Conversion throughput and peak memory on generator-like JSONL.

    python benchmarks/convert_throughput.py --patients 100000            # synthesise + convert
    python benchmarks/convert_throughput.py --input data/synthetic_patients.jsonl
    python benchmarks/convert_throughput.py --input p.jsonl --per-record   # the reference path, to compare

Synthesises histories shaped like the generator's (median ~80 codes over ~25 visits, a few hundred
distinct codes per system) unless --input is given, then times scripts/convert_synthetic_to_dataset.py's
library path in a child process and reports patients/s and peak RSS (ru_maxrss of that process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ICD = [f"{c}{n:02d}.{d}" for c in "EIJKM" for n in range(10, 60) for d in range(0, 10, 3)]
ATC = [f"{a}{n:02d}{b}{c}{m:02d}" for a in "ACJN" for n in (1, 2, 10) for b in "AB" for c in "AB" for m in range(1, 12)]
CPT = [f"{n:05d}" for n in range(99201, 99500, 3)]


def synthesise(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            y = rng.randint(1940, 2005)
            visits = max(1, int(rng.lognormvariate(3.2, 0.5)))
            dx, rx, px = [], [], []
            for _ in range(visits):
                date = f"{rng.randint(2015, 2023)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                dx += [{"code": rng.choice(ICD), "date": date} for _ in range(rng.randint(1, 2))]
                if rng.random() < 0.5:
                    rx.append({"code": rng.choice(ATC), "date": date})
                if rng.random() < 0.6:
                    px.append({"code": rng.choice(CPT), "date": date})
            stays = [{"admission_date": "2019-03-01", "discharge_date": f"2019-03-{rng.randint(2, 20):02d}"}
                     ] if rng.random() < 0.2 else []
            f.write(json.dumps({"patient_id": f"P{i:07d}", "birth_date": f"{y}-06-15",
                                "sex": rng.choice("FM"), "diagnoses": dx, "prescriptions": rx,
                                "procedures": px, "hospitalizations": stays}) + "\n")


def child(input: str, output: str, fast: str = "1") -> None:
    import torch  # noqa: F401 - a one-off ~2-3 s import, excluded from the rate

    from exmed_bert.convert.conversion import convert_patients

    t0 = time.perf_counter()
    man = convert_patients(input, output, progress=False, **({} if fast == "1" else {"fast": False}))
    dt = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"patients": man["records"], "seconds": dt, "patients_per_s": man["records"] / dt,
                      "peak_rss_mb": rss_mb,
                      "median_codes": man["splits"]["train"]["length_percentiles"].get("p50")}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--input", help="existing JSON/JSONL input (default: synthesise one)")
    ap.add_argument("--workdir", default="benchmarks/results")
    ap.add_argument("--per-record", action="store_true",
                    help="time the per-record reference path instead of the columnar JSONL path")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return 0
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    input = Path(a.input) if a.input else work / f"bench_{a.patients}.jsonl"
    if not input.exists():
        t0 = time.perf_counter()
        synthesise(input, a.patients)
        print(f"synthesised {a.patients} patients in {time.perf_counter() - t0:.1f}s -> {input}", file=sys.stderr)
    out = subprocess.run([sys.executable, __file__, "--child", str(input), str(work / "bench.pt"),
                          "0" if a.per_record else "1"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    r = json.loads(out.stdout.strip().splitlines()[-1])
    path = "per-record path" if a.per_record else "columnar path"
    print(f"{path}: {r['patients']} patients in {r['seconds']:.1f}s: {r['patients_per_s']:.0f} patients/s, peak RSS "
          f"{r['peak_rss_mb']:.0f} MB, median tokens/patient {r['median_codes']} "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
