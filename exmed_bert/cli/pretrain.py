"""`pretrain-exmed-bert.py` / `pretrain-exmed-bert-clinvec.py`: masked-code (+ PLOS) pretraining. With
--use-clinvec and no ClinVec files in --clinvec-dir, the demo release is built beside it first (rebuilt when
stale); pretraining itself only reads ClinVec files from folders."""

from __future__ import annotations

import sys

from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry
from exmed_bert.synthetic.clinvec_demo import with_demo_release
from exmed_bert.training.args import PretrainArgs


@cli_entry
def main(argv=None, prog: str = "pretrain-exmed-bert.py") -> int:
    args = parse_args(PretrainArgs, argv, prog=prog)
    # torch and transformers load here, after parsing: 3.9 s to import (python -X importtime), --help 0.1 s
    from exmed_bert.training.pretrain import run

    with_demo_release(run)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
