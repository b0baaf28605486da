"""`generate_synthetic_patients.py`: synthetic claims with real codes, a planted task and its oracle, as the
guide's JSON/JSONL (`synthetic.cohort`) or, with --format meds, as a MEDS root (`synthetic.meds_root`)."""

from __future__ import annotations

import sys

from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry
from exmed_bert.synthetic import cohort, meds_root
from exmed_bert.synthetic.args import GenerateArgs


@cli_entry
def main(argv=None) -> int:
    args = parse_args(GenerateArgs, argv, prog="generate_synthetic_patients.py")
    (meds_root.run if args.format == "meds" else cohort.run)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
