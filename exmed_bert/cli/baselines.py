"""`train-rf.py` and `train-xgboost.py`: one command each, one shared runner; only the estimator differs."""

from __future__ import annotations

from exmed_bert.baselines.args import RFArgs, XGBArgs
from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry


def _run(args: RFArgs | XGBArgs) -> int:
    # scikit-learn, scipy and torch load here, after parsing: 2.0 s to import (python -X importtime), --help 0.1 s
    from exmed_bert.baselines.runner import run

    run(args)
    return 0


@cli_entry
def main_rf(argv=None) -> int:
    return _run(parse_args(RFArgs, argv, prog="train-rf.py"))


@cli_entry
def main_xgboost(argv=None) -> int:
    return _run(parse_args(XGBArgs, argv, prog="train-xgboost.py"))
