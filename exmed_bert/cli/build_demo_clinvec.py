"""`scripts/build_demo_clinvec.py`: write the demo ClinVec release (node table, vector CSVs, DEMO marker) for
offline runs; pretraining reads it like the real release when --clinvec-dir holds none."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from exmed_bert.clinvec.release import DEMO_DIR_NAME
from exmed_bert.config import parse_args
from exmed_bert.errors import cli_entry
from exmed_bert.synthetic.clinvec_demo import build_demo_clinvec


@dataclass
class BuildDemoArgs:
    """Build DEMO ClinVec embeddings from the project's code hierarchies and disease modules (not the real
    release; see ClinVec/README.md for that)."""

    output: str = field(default=DEMO_DIR_NAME, metadata={
        "help": "folder to write the demo release into (pretraining finds it beside --clinvec-dir)"})
    dim: int = field(default=128, metadata={"help": "embedding width (the release uses 128)"})
    seed: int = field(default=0, metadata={"help": "random seed (node order, noise)"})


@cli_entry
def main(argv=None) -> int:
    args = parse_args(BuildDemoArgs, argv, prog="build_demo_clinvec.py")

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = build_demo_clinvec(args.output, dim=args.dim, seed=args.seed)
    print(f"DEMO ClinVec embeddings written to {out}/ (synthetic, not the real release)")
    return 0
