"""The guide's interactive wizard (train_interactive.sh / .bat): ask, summarise, confirm, run the pipeline.

Every question's default and choices come from the stages' typed arguments (config.yaml's value, else the
dataclass default). Answers override config.yaml for this run only; they are written to
`<output_root>/wizard_config.yaml`, which the pipeline then runs with (and records in each stage's
run_config.json).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from exmed_bert import pipeline
from exmed_bert.clinvec.release import VOCAB_TYPES, vocab_file
from exmed_bert.config import choices_of, config_path, from_sections, parse_args, read_yaml, split_sections
from exmed_bert.errors import UserError, cli_entry
from exmed_bert.io import write_text
from exmed_bert.stages import REGISTRY
from exmed_bert.synthetic.args import GenerateArgs
from exmed_bert.synthetic.clinvec_demo import ensure_demo_release
from exmed_bert.training.args import PretrainArgs

# The guide's label and question for each ClinVec vocabulary (asked in VOCAB_TYPES order).
VOCAB_LABELS = {
    "icd10cm": ("ICD-10 CM", "Include ICD-10 codes?"),
    "icd9cm": ("ICD-9 CM", "Include ICD-9 codes?"),
    "atc": ("ATC Drug Codes", "Include ATC drug codes?"),
    "cpt": ("CPT Procedure Codes", "Include CPT codes?"),
    "rxnorm": ("RxNorm Drug Codes", "Include RxNorm codes?"),
    "phecode": ("Phecodes", "Include phecodes?"),
}
RULE = "=" * 42


@dataclass
class WizardArgs:
    """Interactive set-up of a training run (the guide's train_interactive wizard)."""

    dry_run: bool = field(default=False, metadata={"help": "write the run's config but do not start the pipeline"})


class Aborted(Exception):
    pass


class Prompter:
    """Asks questions on stdin; Enter accepts the default; bad answers are asked again with a reason."""

    def __init__(self, read: Callable[[str], str] = input):
        self.read = read

    def ask(self, prompt: str, default: Any, parse: Callable[[str], Any]) -> Any:
        while True:
            try:
                raw = self.read(f"{prompt} [{default}]: ").strip()
            except EOFError:
                raise Aborted("no more input (EOF); nothing was run") from None
            if raw == "":
                return parse(str(default))
            try:
                return parse(raw)
            except ValueError as e:
                print(f"  Invalid answer: {e}. Please try again.")

    def yes_no(self, prompt: str, default: bool = True) -> bool:
        return self.ask(f"{prompt} (y/n)", "y" if default else "n", _parse_yn)


def _parse_yn(s: str) -> bool:
    s = s.lower()
    if s in ("y", "yes"):
        return True
    if s in ("n", "no"):
        return False
    raise ValueError(f"'{s}' is not y or n")


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise ValueError(f"'{s}' is not a whole number") from None
        if v < lo:
            raise ValueError(f"must be at least {lo}")
        return v
    return parse


def _fraction(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"'{s}' is not a number") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{v} is outside 0.0-1.0")
    return v


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(s: str) -> str:
        if s not in choices:
            raise ValueError(f"'{s}' is not one of {', '.join(choices)}")
        return s
    return parse


def header(title: str) -> None:
    print(f"\n{RULE}\n{title}\n{RULE}\n")


def settings(cfg: dict, where: str) -> dict[str, Any]:
    """Every stage's arguments from a config.yaml mapping (in memory): the values the questions default to."""
    sections, _ = split_sections(cfg, where)  # its notices were shown when config.yaml was read
    return {name: from_sections(cls, sections, where) for name, cls in REGISTRY}


def answer(cfg: dict, stage: str, **values: Any) -> dict:
    """`cfg` with `values` in `stage`'s section, where they win over the guide's flat keys (a new mapping)."""
    return {**cfg, stage: {**(cfg.get(stage) or {}), **values}}


def run_wizard(cfg: dict, config_path: str, ask: Prompter) -> dict:
    """Ask the guide's four steps about `cfg` (config.yaml as read); returns it with the answers applied."""
    now = settings(cfg, config_path)
    gen, pre = now["generate"], now["pretrain"]

    header("STEP 1: Data Generation")
    generate = ask.yes_no("Generate new synthetic data?", now["pipeline"].generate_data)
    cfg = answer(cfg, "pipeline", generate_data=generate)
    if generate:
        n = ask.ask("Number of patients to generate", gen.num_patients, _int_at_least(1))
        novel = ask.ask("Novel code probability (0.0-1.0)", gen.novel_prob, _fraction)
        tasks = choices_of(GenerateArgs, "task")
        task = ask.ask(f"Planted task ({', '.join(tasks)})", gen.task, _choice(tasks))
        cfg = answer(cfg, "generate", num_patients=n, novel_prob=novel, task=task)
    elif not Path(now["pipeline"].patients_file).exists():
        print(f"  Note: {now['pipeline'].patients_file} does not exist yet; it must be there before conversion.")

    header("STEP 2: Dataset Conversion")
    max_length = ask.ask("Maximum sequence length", now["convert"].max_length, _int_at_least(8))
    train_ratio = ask.ask("Training set ratio (0.0-1.0)", now["convert"].train_ratio, _fraction)
    cfg = answer(cfg, "convert", max_length=max_length, train_ratio=train_ratio)

    header("STEP 3: ClinVec Embeddings")
    use_clinvec = ask.yes_no("Use ClinVec pre-trained embeddings?", pre.use_clinvec)
    cfg = answer(cfg, "pretrain", use_clinvec=use_clinvec, **(_ask_clinvec(pre, ask) if use_clinvec else {}))

    header("STEP 4: Review Training Configuration")
    print(f"Reading configuration from {config_path}...\n")
    print_summary(settings(cfg, config_path))
    print("\nNOTE: To change model/training settings, edit config.yaml\n")
    if not ask.yes_no("Proceed with training?", True):
        raise Aborted("training cancelled; nothing was run")
    return cfg


def _ask_clinvec(pre: PretrainArgs, ask: Prompter) -> dict:
    clinvec_dir = pre.clinvec_dir
    print("\nDetecting available ClinVec vocabulary files...")
    found = [v for v in VOCAB_TYPES if (Path(clinvec_dir) / vocab_file(v)).exists()]
    if not found:
        print(f"  [MISSING] no ClinVec_<vocab>.csv files in {clinvec_dir}/ (see ClinVec/README.md to download them)")
        if not ask.yes_no("Use the bundled DEMO embeddings instead (not real ClinVec)?", True):
            print("  Training without ClinVec (random initialisation).")
            return {"use_clinvec": False}
        clinvec_dir = str(ensure_demo_release(clinvec_dir))
        print(f"  Using DEMO embeddings from {clinvec_dir}")
        found = [v for v in VOCAB_TYPES if (Path(clinvec_dir) / vocab_file(v)).exists()]
    chosen = []
    for key in found:
        label, question = VOCAB_LABELS[key]
        print(f"  [FOUND] {label} ({vocab_file(key)})")
        if ask.yes_no(f"  {question}", True):
            chosen.append(key)
    if not chosen:
        print("  No vocabulary selected: training without ClinVec.")
        return {"use_clinvec": False}
    print(f"\nSelected vocabularies: {','.join(chosen)}\n")
    hier = ask.yes_no("Use hierarchical initialization for novel codes?", pre.use_hierarchical_init)
    methods = choices_of(PretrainArgs, "resize_method")
    resize = ask.ask("Embedding resize method", pre.resize_method, _choice(methods))
    return {"clinvec_dir": clinvec_dir, "vocab_types": chosen, "use_hierarchical_init": hier, "resize_method": resize}


def print_summary(now: dict[str, Any]) -> None:
    """The guide's summary, from the stages' resolved arguments (the architecture as PretrainArgs resolved it)."""
    pre, pipe = now["pretrain"], now["pipeline"]
    out = Path(pipe.output_root) / ("with_clinvec" if pre.use_clinvec else "random_init")
    print("Configuration Summary:\n")
    print("  Model Architecture:")
    print(f"    - Layers: {pre.num_hidden_layers}\n    - Hidden size: {pre.hidden_size}")
    print(f"    - Intermediate size: {pre.intermediate_size}\n    - Attention heads: {pre.num_attention_heads}")
    print("\n  Training Parameters:")
    print(f"    - Epochs: {pre.num_epochs:g}\n    - Batch size: {pre.batch_size}")
    print(f"    - Learning rate: {pre.learning_rate:g}\n    - Max sequence length: {now['convert'].max_length}")
    print("\n  Data:")
    print(f"    - Training data: {Path(pipe.dataset_dir) / 'synthetic_train.pt'}")
    print(f"    - Output directory: {out}")
    print("\n  ClinVec Settings:")
    if pre.use_clinvec:
        print(f"    - Status: ENABLED\n    - Directory: {pre.clinvec_dir}")
        print(f"    - Vocabularies: {','.join(pre.vocab_types)}")
        print(f"    - Hierarchical init: {'y' if pre.use_hierarchical_init else 'n'}")
    else:
        print("    - Status: DISABLED")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = config_path(argv, "config.yaml")
    if not Path(config).is_file():
        raise UserError(f"{config}: config file not found (run from the project folder)")
    cfg, sections = read_yaml(config)  # the one read; a typo in config.yaml is reported before any question
    args = parse_args(WizardArgs, argv, prog="train_interactive", sections=sections)
    try:
        cfg = run_wizard(cfg, config, Prompter())
    except Aborted as e:
        print(f"\nAborted: {e}.")
        return 1
    run_config = Path(settings(cfg, config)["pipeline"].output_root) / "wizard_config.yaml"
    write_text(run_config, "# Written by the interactive wizard: config.yaml with this run's answers.\n"
               + yaml.safe_dump(cfg, sort_keys=False))
    print(f"\nThis run's configuration: {run_config}")
    if args.dry_run:
        return 0
    return pipeline.main(["--config", str(run_config)])


if __name__ == "__main__":
    sys.exit(main())
