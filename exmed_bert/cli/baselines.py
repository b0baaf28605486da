"""The baselines' commands (`train-rf.py`, `train-xgboost.py`, `train-logreg.py`): one `main_<name>` each
over one shared runner; only the settings class, and so the registry entry, differs."""

from __future__ import annotations

from exmed_bert.baselines import registry
from exmed_bert.baselines.args import BaselineArgs, LogRegArgs, RFArgs, XGBArgs
from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry


def _main(args_class: type[BaselineArgs], argv) -> int:
    args = parse_args(args_class, argv, prog=registry.for_class(args_class).script)
    # scikit-learn, scipy and torch load here, after parsing: 2.0 s to import (python -X importtime), --help 0.1 s
    from exmed_bert.baselines.runner import run

    run(args)
    return 0


@cli_entry
def main_rf(argv=None) -> int:
    return _main(RFArgs, argv)


@cli_entry
def main_xgboost(argv=None) -> int:
    return _main(XGBArgs, argv)


@cli_entry
def main_logreg(argv=None) -> int:
    return _main(LogRegArgs, argv)
