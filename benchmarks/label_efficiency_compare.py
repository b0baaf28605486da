"""Two label-efficiency runs of one seed, one setting apart (an ablation such as the time encoding): each
arm's AUROC in both and the paired difference per k, replicate by replicate (the same k-subsets).

    python benchmarks/label_efficiency.py --task trajectory --time2vec --arms bert_finetune,bert_probe,bert_scratch \\
        --out benchmarks/results/le_trajectory_t2v
    python benchmarks/label_efficiency_compare.py benchmarks/results/le_trajectory_t2v \\
        benchmarks/results/le_trajectory_20k --names time2vec,none

Prints the Markdown table (docs/EVALUATION.md shows them) and writes it with --out; --plot draws both
runs' curves on one figure. Runs over other patients (other --pretrain-patients, say) have no paired
table, but --plot-only draws two or more of them side by side:

    python benchmarks/label_efficiency_compare.py benchmarks/results/le_trajectory_100k \\
        benchmarks/results/le_trajectory_20k --names 100k,20k --arms bert_finetune,rf_counts \\
        --plot-only --plot docs/img/label_efficiency_trajectory_cohorts.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from exmed_bert.errors import UserError, cli_entry
from exmed_bert.evaluation.label_efficiency import compare_runs, plot_runs
from exmed_bert.io import write_text


def load(folder: str) -> dict:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; give the --out folder of a label_efficiency.py run")
    return json.loads(path.read_text(encoding="utf-8"))


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="label_efficiency.py output folders: two (A, B) for the "
                   "paired table A − B (same seed and protocol); two or more with --plot-only")
    p.add_argument("--names", default="", help="the runs' names in the table and plot, comma-separated "
                   "(default A, B, C, ...)")
    p.add_argument("--arms", default="", help="comma-separated arms to compare (default: every arm both ran)")
    p.add_argument("--out", default="", help="also write the table to this Markdown file")
    p.add_argument("--plot", default="", help="draw both runs' AUROC against k (the chosen arms) to this PNG")
    p.add_argument("--plot-only", action="store_true", help="no paired table: only --plot (for runs over "
                   "other patients, such as two pretraining cohort sizes)")
    a = p.parse_args(argv)
    names = tuple(x.strip() for x in a.names.split(",")) if a.names else tuple("ABCDEFGH"[:len(a.runs)])
    if len(names) != len(a.runs) or not all(names):
        raise UserError(f"--names wants one name per run ({len(a.runs)}), comma-separated; got {a.names!r}")
    if len(a.runs) < 2 or (len(a.runs) > 2 and not a.plot_only):
        raise UserError(f"give two runs for the paired table, or two or more with --plot-only; got {len(a.runs)}")
    arms = [x.strip() for x in a.arms.split(",") if x.strip()] or None
    if a.plot_only and not a.plot:
        raise UserError("--plot-only wants --plot PATH")
    docs = [load(r) for r in a.runs]
    if not a.plot_only:
        table = compare_runs(*docs, names, arms)
        print(table, end="")
        if a.out:
            write_text(a.out, table)
    if a.plot:
        task = docs[0].get("settings", {}).get("task", "")
        plot_runs(list(zip(names, docs)), a.plot, f"{task}: {' against '.join(names)}".strip(": "), arms)
        print(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
