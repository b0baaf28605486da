"""The pipeline's stages in the order they run, each with its typed arguments: the one registry that
config.yaml is read against (`exmed_bert.config`), and the pipeline's own settings (`PipelineArgs`).

Light to import (each stage's `args` module; no torch): reading config.yaml stays fast. Each stage's
`run(args)` sits beside its dataclass: synthetic.cohort, convert.conversion, training.pretrain,
training.finetune, baselines.runner, evaluation.report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exmed_bert.baselines.registry import BASELINES
from exmed_bert.convert import ConvertArgs
from exmed_bert.errors import UserError
from exmed_bert.evaluation.args import CompareArgs
from exmed_bert.synthetic.args import GenerateArgs
from exmed_bert.training.args import FinetuneArgs, PretrainArgs

# the baselines' names come from their registry (baselines/registry.py), in its order
STAGES = ("generate", "convert", "pretrain", "finetune", *(b.name for b in BASELINES), "report")
# what the pipeline runs when config.yaml names no `stages:`: every stage but the baselines left out of it
DEFAULT_STAGES = tuple(s for s in STAGES if s not in {b.name for b in BASELINES if not b.in_default_pipeline})


@dataclass
class PipelineArgs:
    """Run every stage of ExMed-BERT from one config.yaml."""

    patients_file: str = field(default="data/synthetic_patients.json",
                               metadata={"help": "patients JSON/JSONL (generated, or your own extract)"})
    task_file: str = field(default="data/task_specific.csv",
                           metadata={"help": "task CSV patient_id,label,prediction_date"})
    dataset_dir: str = field(default="pretrain_stuff", metadata={"help": "folder for the encoded .pt datasets"})
    output_root: str = field(default="output", metadata={"help": "folder for models, baselines and the report"})
    generate_data: bool = field(default=True,
                                metadata={"help": "generate synthetic patients (off: use patients_file as is)"})
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES),
                              metadata={"help": "stages to run, comma-separated", "choices": list(STAGES)})
    force: bool = field(default=False, metadata={"help": "rerun stages even when nothing changed"})

    def validate(self) -> None:
        if self.generate_data is False and "generate" in self.stages and not Path(self.patients_file).exists():
            raise UserError(f"{self.patients_file}: patients file not found (set generate_data: true to make one)")


# (stage, its arguments), in pipeline order; "pipeline" is the runner's own settings. Each name is also the
# stage's section of config.yaml (`pretrain:`, `rf:`, ...; the guide's flat keys: exmed_bert.config).
REGISTRY: tuple[tuple[str, type], ...] = (
    ("generate", GenerateArgs), ("convert", ConvertArgs), ("pretrain", PretrainArgs), ("finetune", FinetuneArgs),
    *((b.name, b.args) for b in BASELINES), ("report", CompareArgs), ("pipeline", PipelineArgs),
)


def default_runs() -> list[str]:
    """The report's runs when none are given: fine-tuning's and each default baseline's default output folder."""
    return [FinetuneArgs.output_dir, *(b.args.output_dir for b in BASELINES if b.in_default_pipeline)]
