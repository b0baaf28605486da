"""`compare-models.py`: one report comparing fine-tuned ExMed-BERT, RF and XGBoost on the same test patients."""

from __future__ import annotations

import dataclasses
import sys

from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry
from exmed_bert.evaluation.args import CompareArgs
from exmed_bert.stages import default_runs


def _split_runs(argv: list[str]) -> list[str]:
    """Let `--runs a b c` (the guide's form) mean `--runs a,b,c`."""
    out, i = [], 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] == "--runs":
            vals = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                vals.append(argv[i + 1])
                i += 1
            out.append(",".join(vals))
        i += 1
    return out


@cli_entry
def main(argv=None, prog: str = "compare-models.py") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(CompareArgs, _split_runs(argv), prog=prog)
    if not args.runs:   # none given: the models the pipeline trains by default
        args = dataclasses.replace(args, runs=default_runs())
    # matplotlib, pandas and scikit-learn load here, after parsing: 1.0 s to import (python -X importtime),
    # --help 0.1 s
    from exmed_bert.evaluation.report import run

    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
