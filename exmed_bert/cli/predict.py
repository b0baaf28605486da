"""`predict-exmed-bert.py`: a fine-tuned ExMed-BERT's predictions for one split of a task, as MEDS
predictions.parquet."""

from __future__ import annotations

import sys

from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry
from exmed_bert.predict.args import PredictArgs


@cli_entry
def main(argv=None, prog: str = "predict-exmed-bert.py") -> int:
    args = parse_args(PredictArgs, argv, prog=prog)
    # torch and transformers load here, after parsing, as for fine-tuning: --help stays fast
    from exmed_bert.predict.scoring import run

    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
