"""Time loading a release-sized ClinVec_icd10cm.csv (35,000 rows x 128) plus its node table.

    python benchmarks/clinvec_load.py [--rows 35000] [--repeat 3]

Target: under 5 s. Writes the synthetic release to a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from exmed_bert.synthetic.clinvec_demo import write_node_table, write_vector_csv
from exmed_bert.clinvec.loader import load_clinvec


def write_synthetic_release(folder: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    index = rng.permutation(rows * 4)[:rows]  # global, sparse, unordered: like a real node table slice
    codes = [f"{chr(65 + i % 26)}{i // 26 % 100:02d}.{i // 2600:d}:icd10cm" for i in range(rows)]
    nodes = [(c, "synthetic node", "ICD10CM", int(j)) for c, j in zip(codes, index)]
    nodes += [(f"X{i}:atc", "", "ATC", int(rows * 4 + i)) for i in range(rows * 3)]  # other vocabularies
    write_node_table(folder / "ClinGraph_nodes.csv", nodes)
    write_vector_csv(folder / "ClinVec_icd10cm.csv", index, rng.normal(0, 0.1, (rows, 128)).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=35_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        write_synthetic_release(folder, args.rows)
        size = (folder / "ClinVec_icd10cm.csv").stat().st_size / 2**20
        print(f"wrote {args.rows} x 128 ({size:.1f} MiB) + node table ({4 * args.rows} rows) "
              f"in {time.perf_counter() - t0:.1f} s")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            tables = load_clinvec(folder, ["icd10cm"])
            times.append(time.perf_counter() - t0)
        assert tables["icd10cm"].vectors.shape == (args.rows, 128)
        print(f"load_clinvec(icd10cm): best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
              f"over {args.repeat} runs (target < 5 s)")


if __name__ == "__main__":
    main()
