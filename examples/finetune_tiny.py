"""Fine-tune the pretrained tiny model on the generator's planted task (heart-failure admission).

Shows: `exmed_bert.cli.finetune.main(argv)` with the guide's fine-tuning flags; it writes
<workdir>/finetuned/checkpoint-best/ (the classifier, with vocab.json), metrics.json (test split,
with 95% CIs) and predictions.csv. Needs generate_and_inspect.py and pretrain_tiny.py first.

    python examples/finetune_tiny.py --workdir examples_out --tiny
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry, run


@dataclass
class Args:
    """Fine-tune <workdir>/model/checkpoint-best on <workdir>/data/task_specific.csv."""

    workdir: str = field(default="examples_out", metadata={"help": "folder of the earlier examples"})
    tiny: bool = field(default=False, metadata={"help": "1 epoch, 50 bootstrap resamples: runs in seconds"})


@cli_entry
def main(argv=None) -> int:
    args = parse_args(Args, argv, prog="finetune_tiny.py")
    from exmed_bert.cli import finetune

    work = Path(args.workdir)
    model = work / "model" / "checkpoint-best"
    if not (model / "model.safetensors").is_file():
        raise UserError(f"{model}: no pretrained model; run examples/pretrain_tiny.py --workdir {work} first")
    flags = ["--model-path", str(model), "--task-data", str(work / "data" / "task_specific.csv"),
             "--data-dir", str(work / "pretrain_stuff"), "--output-dir", str(work / "finetuned"),
             "--num-labels", "2", "--learning-rate", "5e-4"]
    # A 50-patient cohort can have a one-class validation split, where AUROC/F1 are undefined: select on loss.
    flags += ["--num-epochs", "1", "--metric-for-best-model", "loss", "--n-bootstrap", "50"] if args.tiny else \
        ["--num-epochs", "5"]
    return finetune.main(flags)


if __name__ == "__main__":
    run(main)
