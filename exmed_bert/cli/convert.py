"""`convert_synthetic_to_dataset.py`: patient records (JSON, JSONL or MEDS) -> train/val/test datasets."""

from __future__ import annotations

import sys

from exmed_bert.config import parse_args
from exmed_bert.convert.args import ConvertArgs
from exmed_bert.convert.processes import start_early, tune_malloc
from exmed_bert.errors import cli_entry


@cli_entry
def main(argv=None) -> int:
    args = parse_args(ConvertArgs, argv, prog="convert_synthetic_to_dataset.py")
    # the workers' fork server (if they will be used) imports its modules while this process imports its own
    start_early(args.input, args.workers)
    tune_malloc()   # this process converts too (one process), and merges and writes (workers)
    # torch and pyarrow load here, after parsing: 1.1 s to import (python -X importtime), --help 0.1 s
    from exmed_bert.convert.conversion import run

    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
