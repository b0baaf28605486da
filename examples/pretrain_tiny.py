"""Pretrain a tiny ExMed-BERT for a few steps through the same entry point as the guide's script.

Shows: calling `exmed_bert.cli.pretrain.main(argv)` from Python with the flags of
`scripts/pretrain-exmed-bert.py` (add "--use-clinvec" for ClinVec, demo embeddings when none are
installed), and what a run leaves behind: checkpoint-best/ (config.json, model.safetensors, vocab.json),
eval_results.json with the masked-code accuracy against the frequency baseline. Needs the data from
generate_and_inspect.py.

    python examples/pretrain_tiny.py --workdir examples_out --tiny
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry, run


@dataclass
class Args:
    """Pretrain a small model on <workdir>/pretrain_stuff into <workdir>/model."""

    workdir: str = field(default="examples_out", metadata={"help": "folder holding pretrain_stuff/"})
    tiny: bool = field(default=False, metadata={"help": "tiny preset, 4 steps: runs in seconds"})
    max_steps: int = field(default=100, metadata={"help": "optimiser updates (without --tiny)"})
    use_clinvec: bool = field(default=False, metadata={"help": "initialise code embeddings from ClinVec"})


@cli_entry
def main(argv=None) -> int:
    args = parse_args(Args, argv, prog="pretrain_tiny.py")
    from exmed_bert.cli import pretrain

    work = Path(args.workdir)
    data, out = work / "pretrain_stuff", work / "model"
    if not (data / "vocab.json").is_file():
        raise UserError(f"{data}: no converted data; run examples/generate_and_inspect.py --workdir {work} first")
    steps = 4 if args.tiny else args.max_steps
    flags = ["--data-dir", str(data), "--output-dir", str(out), "--model-size", "tiny" if args.tiny else "small",
             "--max-steps", str(steps), "--save-steps", str(steps), "--eval-steps", str(max(steps // 2, 1)),
             "--logging-steps", "1", "--batch-size", "8", "--learning-rate", "2e-3", "--plos"]
    if args.use_clinvec:
        flags += ["--use-clinvec", "--clinvec-dir", "ClinVec"]
    rc = pretrain.main(flags)  # the same main() scripts/pretrain-exmed-bert.py runs; 2 = bad input
    if rc != 0:
        return rc

    results = json.loads((out / "eval_results.json").read_text())
    print(f"\nbest model: {out / 'checkpoint-best'} ({', '.join(sorted(p.name for p in (out / 'checkpoint-best').iterdir()))})")
    print(f"validation: loss {results['eval_loss']:.3f}, top-10 masked accuracy {results['eval_top10_accuracy']:.3f} "
          f"vs unigram baseline {results['eval_unigram_top10_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    run(main)
