"""`embed-patients.py`: write a pretrained or fine-tuned model's patient embeddings for a task to Parquet."""

from __future__ import annotations

import sys

from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry
from exmed_bert.training.args import EmbedArgs  # noqa: F401 - the stage's settings, importable from here too


@cli_entry
def main(argv=None, prog: str = "embed-patients.py") -> int:
    args = parse_args(EmbedArgs, argv, prog=prog)
    # torch and transformers load here, after parsing, so --help stays fast
    from exmed_bert.training.embed import run

    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
