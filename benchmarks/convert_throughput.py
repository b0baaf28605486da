"""Conversion throughput and peak memory on generator-like JSONL.

    python benchmarks/convert_throughput.py --patients 100000            # synthesise + convert
    python benchmarks/convert_throughput.py --input data/synthetic_patients.jsonl
    python benchmarks/convert_throughput.py --input p.jsonl --per-record   # the reference path, to compare
    python benchmarks/convert_throughput.py --meds --patients 100000       # generator patients as MEDS
    python benchmarks/convert_throughput.py --meds --patients 40100 --shards 1   # one ~5M-row shard

Synthesises histories shaped like the generator's (median ~80 codes over ~25 visits, a few hundred
distinct codes per system) unless --input is given, then times scripts/convert_synthetic_to_dataset.py's
library path in one process (--workers 1, the command's malloc settings) in a child process and
reports patients/s and peak RSS (ru_maxrss of that process).

--meds writes N patients of the project's generator (scripts/generate_synthetic_patients.py, or
--input's JSONL) as a MEDS root with benchmarks/meds_writer.py (4 shards sorted by subject_id), then
times the whole conversion command (scripts/convert_synthetic_to_dataset.py: Python start, imports and
writing included) with --workers 1 and --workers N (default: every CPU), and, when `meds_reader_convert`
(pip install meds_reader) is found, that converter with N threads on the same root, interleaved in the
same run (--repeats R for medians), every run into an empty folder. Each line gives wall time,
patients/s, rows/s and the peak RSS of the command's largest process, workers included (the timing
process is a child subreaper on Linux, so it reaps the fork server's workers too); then the N-vs-1
speed-up and meds_reader's time over ours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
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
    """One conversion in this process (--workers 1: ru_maxrss of this process is then the whole peak;
    --meds times whole commands, workers included)."""
    from exmed_bert.convert import convert_patients, tune_malloc

    tune_malloc()   # as the command line does
    t0 = time.perf_counter()
    man = convert_patients(input, output, progress=False, workers=1, **({} if fast == "1" else {"fast": False}))
    dt = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"patients": man["records"], "seconds": dt, "patients_per_s": man["records"] / dt,
                      "peak_rss_mb": rss_mb,
                      "median_codes": man["splits"]["train"]["length_percentiles"].get("p50")}))


def generator_jsonl(work: Path, n: int) -> Path:
    """N patients of the project's generator (its task files go to the work folder, not data/)."""
    path = work / f"generator_{n}.jsonl"
    if not path.exists():
        repo = Path(__file__).resolve().parent.parent
        subprocess.run([sys.executable, str(repo / "scripts" / "generate_synthetic_patients.py"), "-n", str(n),
                        "--output", str(path), "--task-output", str(work / f"generator_{n}_task.csv")],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run `cmd` in a child of a fresh Python process: wall seconds and the peak RSS of its largest
    process. That process makes itself a child subreaper (Linux), so conversion workers, which are children
    of the fork server rather than of the command, are reaped by it too and RUSAGE_CHILDREN sees every
    process the command started; elsewhere it sees the processes the command waited for."""
    probe = ("import ctypes, json, os, resource, subprocess, sys, time\n"
             "try: ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER\n"
             "except (OSError, AttributeError): pass\n"
             "t = time.perf_counter()\n"
             "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
             "seconds = time.perf_counter() - t\n"
             "while True:  # orphans the command left (the fork server and its workers): reap them\n"
             "    try: os.waitpid(-1, 0)\n"
             "    except ChildProcessError: break\n"
             "print(json.dumps({'rc': rc, 'seconds': seconds, "
             "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def meds_benchmark(a: argparse.Namespace, work: Path) -> int:
    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from meds_writer import write_meds

    jsonl = Path(a.input) if a.input else generator_jsonl(work, a.patients)
    root = work / f"meds_{jsonl.stem}_{a.shards}shards"
    if not (root / "data").is_dir():
        t0 = time.perf_counter()
        w = write_meds(jsonl, root, shards=a.shards, flat=True)   # N equal shards, as PERFORMANCE.md measured
        print(f"wrote {w['patients']} patients, {w['rows']} MEDS rows in {a.shards} shards in "
              f"{time.perf_counter() - t0:.1f}s -> {root}", file=sys.stderr)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in sorted((root / "data").glob("*.parquet")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    where = (f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
             f"{os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')})")
    print(f"{root}: {rows} MEDS rows in {a.shards} shards {where}")
    cli = str(Path(__file__).resolve().parent.parent / "scripts" / "convert_synthetic_to_dataset.py")
    exe = shutil.which("meds_reader_convert") or shutil.which(
        "meds_reader_convert", path=str(Path(sys.executable).parent))
    counts = sorted({1, a.workers})
    results: dict = {}
    for rep in range(a.repeats):   # interleaved, so load changes hit every command alike
        for n in counts:   # each run converts into an empty folder, as meds_reader_convert's below (replacing
            # an earlier conversion frees its files' page cache: ~45 ms more at 100,000 patients, in both)
            folder = work / f"exmed_w{n}"
            shutil.rmtree(folder, ignore_errors=True)
            out = folder / "bench_meds.pt"
            r = timed([sys.executable, cli, "--input", str(root), "--output", str(out), "--workers", str(n)], env)
            if r["rc"]:
                print(f"conversion with --workers {n} failed (exit {r['rc']})", file=sys.stderr)
                return r["rc"]
            results.setdefault(n, []).append(r)
        if exe is not None:
            dest = work / f"meds_reader_{root.name}"
            shutil.rmtree(dest, ignore_errors=True)
            m = timed([exe, str(root), str(dest), "--num_threads", str(a.meds_reader_threads)], env)
            if m["rc"]:
                print(f"meds_reader_convert failed (exit {m['rc']})", file=sys.stderr)
                return 1
            results.setdefault("meds_reader", []).append(m)
    patients = json.loads((work / "exmed_w1" / "dataset_manifest.json").read_text())["records"]

    def median(rs: list, key: str) -> float:
        return sorted(r[key] for r in rs)[len(rs) // 2]

    line = {}
    for key, rs in results.items():
        t, rss = median(rs, "seconds"), median(rs, "peak_rss_mb")
        line[key] = t
        name = (f"meds_reader_convert ({a.meds_reader_threads} threads)" if key == "meds_reader"
                else f"exmed-bert --workers {key}")
        runs = " / ".join(f"{r['seconds']:.1f}" for r in rs)
        print(f"{name}: {t:.1f} s (runs {runs}): {patients / t:,.0f} patients/s, {rows / t:,.0f} rows/s, "
              f"peak RSS {rss:.0f} MB (largest process, whole command)")
    if len(counts) > 1:   # run by run: each repeat ran both commands back to back, so load drifts cancel
        pairs = sorted(one["seconds"] / many["seconds"] for one, many in zip(results[1], results[a.workers]))
        ratio = median(results[1], "seconds") / median(results[a.workers], "seconds")
        print(f"--workers {a.workers} vs 1: {ratio:.2f}x (medians); {pairs[len(pairs) // 2]:.2f}x pair by pair (median of {len(pairs)}, from "
              f"{pairs[0]:.2f}x to {pairs[-1]:.2f}x)")
    if exe is None:
        print("meds_reader_convert not found (pip install meds_reader to compare)")
    else:
        for n in counts:
            print(f"meds_reader_convert time / exmed-bert --workers {n} time: {line['meds_reader'] / line[n]:.2f} "
                  "(above 1: ours is faster)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--input", help="existing JSON/JSONL input (default: synthesise one)")
    ap.add_argument("--workdir", default="benchmarks/results")
    ap.add_argument("--per-record", action="store_true",
                    help="time the per-record reference path instead of the columnar JSONL path")
    ap.add_argument("--meds", action="store_true",
                    help="write the patients as a MEDS root and time its conversion (and meds_reader_convert)")
    ap.add_argument("--shards", type=int, default=4, help="--meds: number of MEDS shards (default 4)")
    ap.add_argument("--meds-reader-threads", type=int, default=None,
                    help="--meds: meds_reader_convert --num_threads (default: --workers)")
    ap.add_argument("--workers", type=int, default=None,
                    help="--meds: our --workers for the parallel run (default: every CPU); 1 is always run too")
    ap.add_argument("--repeats", type=int, default=1, help="--meds: runs of each command (the median is reported)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return 0
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if a.meds:
        a.workers = a.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        a.meds_reader_threads = a.meds_reader_threads or a.workers
        return meds_benchmark(a, work)
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
