"""Width and frequency curve of the trajectory task's code space: distinct codes, how many are rare, and
a rank-frequency plot (log-log) with a fitted Zipf exponent.

    python benchmarks/trajectory_code_space.py --num-patients 100000 --plot docs/img/trajectory_code_frequency.png
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from exmed_bert.synthetic.cohort import Params, generate


def code_counts(path: Path) -> np.ndarray:
    """Occurrences of each distinct code in a generated JSONL file, most frequent first."""
    counts: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            # '{"code":"E11.9","date":"2020-01-15"}': the code is the text after each '"code":"'
            for piece in line.split('"code":"')[1:]:
                code = piece[:piece.index('"')]
                counts[code] = counts.get(code, 0) + 1
    return np.sort(np.array(list(counts.values())))[::-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-patients", "-n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--plot", help="write the rank-frequency plot (PNG) here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t.jsonl"
        t0 = time.perf_counter()
        meta = generate(Params(args.num_patients, 0.01, args.seed, "2020-01-01", "2024-12-31", 365,
                               task="trajectory"), str(out), str(Path(tmp) / "t_task.csv"), progress=False)
        secs = time.perf_counter() - t0
        counts = code_counts(out)
    rank = np.arange(1, len(counts) + 1)
    mid = (rank >= 10) & (rank <= len(counts) // 2)         # the body of the curve, past the head
    slope = float(np.polyfit(np.log(rank[mid]), np.log(counts[mid]), 1)[0])
    cs = meta["code_space"]
    print(f"{args.num_patients} trajectory patients (seed {args.seed}) in {secs:.0f} s: {len(counts)} distinct codes "
          f"({cs['distinct_by_system']}); {int((counts < 10).sum())} seen under 10 times "
          f"({(counts < 10).mean():.0%}), {int((counts == 1).sum())} once, median {np.median(counts):.0f}; "
          f"{(counts < args.num_patients / 1000).mean():.0%} occur less than once per 1,000 patients; top 100 codes hold "
          f"{counts[:100].sum() / counts.sum():.0%} of {counts.sum():,} events; rank-frequency slope {slope:.2f} "
          f"(Zipf exponent {-slope:.2f}); prevalence {meta['task']['prevalence']:.3f}, "
          f"oracle AUROC {meta['task']['oracle_auroc']:.3f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.loglog(rank, counts, ".", ms=2, label=f"trajectory, {args.num_patients:,} patients")
        ax.loglog(rank[mid], np.exp(np.polyval(np.polyfit(np.log(rank[mid]), np.log(counts[mid]), 1),
                                               np.log(rank[mid]))), "-", lw=1, label=f"fit: slope {slope:.2f}")
        ax.set_xlabel("code rank")
        ax.set_ylabel("occurrences")
        ax.set_title(f"{len(counts):,} distinct codes")
        ax.legend()
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
