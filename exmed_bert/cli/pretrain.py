"""`pretrain-exmed-bert.py` / `pretrain-exmed-bert-clinvec.py`: masked-code (+ PLOS) pretraining."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry
from exmed_bert.training.args import TrainingCommonArgs

VOCAB_TYPES = ["icd10cm", "icd9cm", "atc", "cpt", "rxnorm", "phecode"]
RESIZE_METHODS = ["auto", "truncate", "pca", "learned_projection", "pad_smart", "pad_random"]


@dataclass
class Args(TrainingCommonArgs):
    """Pretrain ExMed-BERT (masked-code prediction, optional PLOS head) on a converted dataset."""

    yaml_section: ClassVar[Optional[str]] = None

    # data
    data_dir: str = field(default="pretrain_stuff", metadata={
        "help": "folder with <dataset-name>_train.pt, <dataset-name>_val.pt and vocab.json (the converter's output)"})
    dataset_name: str = field(default="synthetic", metadata={"help": "file stem of the converted datasets"})
    # architecture: a preset, then explicit flags override it
    model_size: str = field(default="small", metadata={
        "help": "size preset (explicit architecture flags override it)", "choices": ["tiny", "small", "medium", "large"]})
    num_hidden_layers: Optional[int] = field(default=None, metadata={"help": "transformer layers (default: preset)"})
    hidden_size: Optional[int] = field(default=None, metadata={"help": "hidden size (default: preset)"})
    intermediate_size: Optional[int] = field(default=None, metadata={"help": "feed-forward size (default: preset)"})
    num_attention_heads: Optional[int] = field(default=None, metadata={"help": "attention heads (default: preset)"})
    max_position_embeddings: int = field(default=512, metadata={"help": "largest visit index + 1 the model can see"})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "dropout on embeddings and hidden states"})
    attention_probs_dropout_prob: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    initialization: str = field(default="orthogonal", metadata={
        "help": "weight initialisation", "choices": ["orthogonal", "xavier", "kaiming"]})
    # objectives
    dynamic_masking: bool = field(default=False, metadata={"help": "mask different codes each epoch"})
    mlm_probability: float = field(default=0.15, metadata={"help": "share of codes masked per patient"})
    plos: bool = field(default=False, metadata={"help": "also predict a prolonged length of stay"})
    plos_threshold: int = field(default=7, metadata={"help": "a stay of this many days or more is prolonged"})
    plos_weight: float = field(default=1.0, metadata={"help": "loss = MLM + plos_weight x PLOS"})
    # ClinVec (config.yaml: the clinvec_params mapping)
    use_clinvec: bool = field(default=False, metadata={"help": "initialise code embeddings from ClinVec"})
    clinvec_dir: str = field(default="ClinVec", metadata={"help": "folder with the ClinVec release files"})
    vocab_types: list[str] = field(default_factory=lambda: ["icd10cm", "atc", "cpt"], metadata={
        "help": "ClinVec vocabularies to use, comma-separated", "choices": VOCAB_TYPES})
    use_hierarchical_init: bool = field(default=True, metadata={
        "help": "initialise codes missing from ClinVec from their nearest ancestor"})
    resize_method: str = field(default="auto", metadata={
        "help": "how ClinVec's 128-d vectors meet the hidden size", "choices": RESIZE_METHODS})
    freeze_clinvec_steps: int = field(default=0, metadata={
        "help": "keep ClinVec-initialised rows fixed for this many updates"})

    def validate(self) -> None:
        self.validate_common()
        if not 0.0 < self.mlm_probability < 1.0:
            raise UserError(f"--mlm-probability must be between 0 and 1, got {self.mlm_probability}")
        if self.plos_threshold < 1:
            raise UserError(f"--plos-threshold must be at least 1 day, got {self.plos_threshold}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")
        if self.max_position_embeddings < 2:
            raise UserError(f"--max-position-embeddings must be at least 2, got {self.max_position_embeddings}")
        if self.freeze_clinvec_steps < 0:
            raise UserError(f"--freeze-clinvec-steps must be 0 or more, got {self.freeze_clinvec_steps}")
        from exmed_bert.model.presets import resolve_architecture

        resolve_architecture(self.model_size, num_hidden_layers=self.num_hidden_layers, hidden_size=self.hidden_size,
                             intermediate_size=self.intermediate_size, num_attention_heads=self.num_attention_heads)


@cli_entry
def main(argv=None, prog: str = "pretrain-exmed-bert.py") -> int:
    args = parse_args(Args, argv, prog=prog)
    from exmed_bert.training.pretrain import run_pretraining

    run_pretraining(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
