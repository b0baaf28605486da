"""The pipeline's stages in the order they run, each with its typed arguments: the one registry that
config.yaml is read against (`exmed_bert.config`), and the pipeline's own settings (`PipelineArgs`).

Light to import (each stage's `args` module; no torch): reading config.yaml stays fast. Each stage's
`run(args)` sits beside its dataclass: synthetic.cohort, convert.conversion, training.pretrain,
training.finetune, baselines.runner, evaluation.report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from exmed_bert.baselines.args import RFArgs, XGBArgs
from exmed_bert.convert.args import ConvertArgs
from exmed_bert.errors import UserError
from exmed_bert.evaluation.args import CompareArgs
from exmed_bert.synthetic.args import GenerateArgs
from exmed_bert.training.args import FinetuneArgs, PretrainArgs

STAGES = ("generate", "convert", "pretrain", "finetune", "rf", "xgboost", "report")


@dataclass
class PipelineArgs:
    """Run every stage of ExMed-BERT from one config.yaml."""

    yaml_section: ClassVar[str | None] = None
    patients_file: str = field(default="data/synthetic_patients.json",
                               metadata={"help": "patients JSON/JSONL (generated, or your own extract)"})
    task_file: str = field(default="data/task_specific.csv",
                           metadata={"help": "task CSV patient_id,label,prediction_date"})
    dataset_dir: str = field(default="pretrain_stuff", metadata={"help": "folder for the encoded .pt datasets"})
    output_root: str = field(default="output", metadata={"help": "folder for models, baselines and the report"})
    generate_data: bool = field(default=True,
                                metadata={"help": "generate synthetic patients (off: use patients_file as is)"})
    stages: list[str] = field(default_factory=lambda: list(STAGES),
                              metadata={"help": "stages to run, comma-separated", "choices": list(STAGES)})
    force: bool = field(default=False, metadata={"help": "rerun stages even when nothing changed"})

    def validate(self) -> None:
        if self.generate_data is False and "generate" in self.stages and not Path(self.patients_file).exists():
            raise UserError(f"{self.patients_file}: patients file not found (set generate_data: true to make one)")


# (stage, its arguments), in pipeline order; "pipeline" is the runner's own settings. A class reads the
# top-level keys of config.yaml (yaml_section None) or its own mapping (`finetune:`, `rf:`, ...).
REGISTRY: tuple[tuple[str, type], ...] = (
    ("generate", GenerateArgs), ("convert", ConvertArgs), ("pretrain", PretrainArgs), ("finetune", FinetuneArgs),
    ("rf", RFArgs), ("xgboost", XGBArgs), ("report", CompareArgs), ("pipeline", PipelineArgs),
)
