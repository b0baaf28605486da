"""`generate_synthetic_patients.py`: synthetic claims with real codes, a planted task and its oracle."""

from __future__ import annotations

import sys

from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry
from exmed_bert.synthetic.args import GenerateArgs
from exmed_bert.synthetic.cohort import run


@cli_entry
def main(argv=None) -> int:
    run(parse_args(GenerateArgs, argv, prog="generate_synthetic_patients.py"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
