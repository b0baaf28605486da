"""`convert_synthetic_to_dataset.py`: patient records (JSON, JSONL or MEDS) -> train/val/test datasets.

Light at import (this is also what the workers' fork server imports as the main module): the argument
parser's modules and the conversion load inside `main`, after the fork server has been started.
"""

from __future__ import annotations

import sys

from exmed_bert.convert import peek_flags, start_early, tune_malloc
from exmed_bert.errors import cli_entry


@cli_entry
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the workers' fork server imports its modules while this process imports its own: started on a first
    # look at the flags, then (if a --config file named them) on the parsed arguments
    started = start_early(*peek_flags(argv))
    from exmed_bert.config import parse_args
    from exmed_bert.convert import ConvertArgs

    args = parse_args(ConvertArgs, argv, prog="convert_synthetic_to_dataset.py")
    if not started:
        start_early(args.input, args.workers)
    tune_malloc()   # this process converts too (one process), and merges and writes (workers)
    # numpy and pyarrow load here, after parsing: 0.2 s to import (python -X importtime), --help 0.1 s
    from exmed_bert.convert import run

    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
