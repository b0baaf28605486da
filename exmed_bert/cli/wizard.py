"""The guide's interactive wizard (train_interactive.sh / .bat): ask, summarise, confirm, run the pipeline.

Answers override config.yaml for this run only; they are written to `<output_root>/wizard_config.yaml`,
which the pipeline then runs with (and records in each stage's run_config.json).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from exmed_bert.config import config_path, parse_args
from exmed_bert.errors import UserError, cli_entry
from exmed_bert.synthetic.task import TASKS

# ClinVec vocabularies the wizard looks for, with the guide's labels.
VOCABS = [
    ("icd10cm", "ICD-10 CM", "Include ICD-10 codes?"),
    ("atc", "ATC Drug Codes", "Include ATC drug codes?"),
    ("cpt", "CPT Procedure Codes", "Include CPT codes?"),
    ("icd9cm", "ICD-9 CM", "Include ICD-9 codes?"),
    ("rxnorm", "RxNorm Drug Codes", "Include RxNorm codes?"),
    ("phecode", "Phecodes", "Include phecodes?"),
]
RESIZE_METHODS = ("auto", "truncate", "pca", "learned_projection", "pad_smart", "pad_random")
RULE = "=" * 42


@dataclass
class Args:
    """Interactive set-up of a training run (the guide's train_interactive wizard)."""

    yaml_section: ClassVar[str | None] = "wizard"
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


def run_wizard(config_path: str, ask: Prompter) -> dict:
    """Ask the guide's four steps; returns the run's config (config.yaml with the answers applied)."""
    import yaml

    from exmed_bert.config import load_yaml

    load_yaml(config_path)  # validate first: a typo in config.yaml is reported before any question
    cfg = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    cv = dict(cfg.get("clinvec_params") or {})

    header("STEP 1: Data Generation")
    cfg["generate_data"] = ask.yes_no("Generate new synthetic data?", cfg.get("generate_data", True))
    if cfg["generate_data"]:
        cfg["num_patients"] = ask.ask("Number of patients to generate", cfg.get("num_patients", 1000), _int_at_least(1))
        cfg["novel_prob"] = ask.ask("Novel code probability (0.0-1.0)", cfg.get("novel_prob", 0.01), _fraction)
        cfg["task"] = ask.ask(f"Planted task ({', '.join(TASKS)})", cfg.get("task", TASKS[0]), _choice(TASKS))
    else:
        patients = cfg.get("patients_file", "data/synthetic_patients.json")
        if not Path(patients).exists():
            print(f"  Note: {patients} does not exist yet; it must be there before conversion.")

    header("STEP 2: Dataset Conversion")
    cfg["max_length"] = ask.ask("Maximum sequence length", cfg.get("max_length", 512), _int_at_least(8))
    cfg["train_ratio"] = ask.ask("Training set ratio (0.0-1.0)", cfg.get("train_ratio", 0.8), _fraction)

    header("STEP 3: ClinVec Embeddings")
    cv["use_clinvec"] = ask.yes_no("Use ClinVec pre-trained embeddings?", cv.get("use_clinvec", True))
    if cv["use_clinvec"]:
        cv.update(_ask_clinvec(cv, ask))
    cfg["clinvec_params"] = cv

    header("STEP 4: Review Training Configuration")
    print(f"Reading configuration from {config_path}...\n")
    print_summary(cfg, config_path)
    print("\nNOTE: To change model/training settings, edit config.yaml\n")
    if not ask.yes_no("Proceed with training?", True):
        raise Aborted("training cancelled; nothing was run")
    return cfg


def _ask_clinvec(cv: dict, ask: Prompter) -> dict:
    clinvec_dir = str(cv.get("clinvec_dir", "ClinVec"))
    print("\nDetecting available ClinVec vocabulary files...")
    found = [v for v in VOCABS if (Path(clinvec_dir) / f"ClinVec_{v[0]}.csv").exists()]
    if not found:
        print(f"  [MISSING] no ClinVec_<vocab>.csv files in {clinvec_dir}/ (see ClinVec/README.md to download them)")
        if not ask.yes_no("Use the bundled DEMO embeddings instead (not real ClinVec)?", True):
            print("  Training without ClinVec (random initialisation).")
            return {"use_clinvec": False}
        from exmed_bert.clinvec import resolve_clinvec_dir

        clinvec_dir = str(resolve_clinvec_dir(clinvec_dir))
        print(f"  Using DEMO embeddings from {clinvec_dir}")
        found = [v for v in VOCABS if (Path(clinvec_dir) / f"ClinVec_{v[0]}.csv").exists()]
    chosen = []
    for key, label, question in found:
        print(f"  [FOUND] {label} (ClinVec_{key}.csv)")
        if ask.yes_no(f"  {question}", True):
            chosen.append(key)
    if not chosen:
        print("  No vocabulary selected: training without ClinVec.")
        return {"use_clinvec": False}
    print(f"\nSelected vocabularies: {','.join(chosen)}\n")
    hier = ask.yes_no("Use hierarchical initialization for novel codes?", bool(cv.get("use_hierarchical_init", True)))
    resize = ask.ask("Embedding resize method", cv.get("resize_method", "auto"), _choice(RESIZE_METHODS))
    return {"clinvec_dir": clinvec_dir, "vocab_types": chosen, "use_hierarchical_init": hier, "resize_method": resize}


def print_summary(cfg: dict, config_path: str) -> None:
    from exmed_bert.model.presets import resolve_architecture

    arch = resolve_architecture(cfg.get("model_size"), num_hidden_layers=cfg.get("num_hidden_layers"),
                                hidden_size=cfg.get("hidden_size"), intermediate_size=cfg.get("intermediate_size"),
                                num_attention_heads=cfg.get("num_attention_heads"))
    cv = cfg.get("clinvec_params", {})
    out = Path(cfg.get("output_root", "output")) / ("with_clinvec" if cv.get("use_clinvec") else "random_init")
    print("Configuration Summary:\n")
    print("  Model Architecture:")
    print(f"    - Layers: {arch['num_hidden_layers']}\n    - Hidden size: {arch['hidden_size']}")
    print(f"    - Intermediate size: {arch['intermediate_size']}\n    - Attention heads: {arch['num_attention_heads']}")
    print("\n  Training Parameters:")
    print(f"    - Epochs: {cfg.get('num_epochs', 3)}\n    - Batch size: {cfg.get('batch_size', 2)}")
    print(f"    - Learning rate: {cfg.get('learning_rate', 1e-4)}\n    - Max sequence length: {cfg.get('max_length', 512)}")
    print("\n  Data:")
    print(f"    - Training data: {Path(cfg.get('dataset_dir', 'pretrain_stuff')) / 'synthetic_train.pt'}")
    print(f"    - Output directory: {out}")
    print("\n  ClinVec Settings:")
    if cv.get("use_clinvec"):
        print(f"    - Status: ENABLED\n    - Directory: {cv.get('clinvec_dir', 'ClinVec')}")
        print(f"    - Vocabularies: {','.join(cv.get('vocab_types', []))}")
        print(f"    - Hierarchical init: {'y' if cv.get('use_hierarchical_init', True) else 'n'}")
    else:
        print("    - Status: DISABLED")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    import yaml

    from exmed_bert import pipeline
    from exmed_bert.io import write_text

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(Args, argv, prog="train_interactive")
    config = config_path(argv, "config.yaml")
    if not Path(config).is_file():
        raise UserError(f"{config}: config file not found (run from the project folder)")
    try:
        cfg = run_wizard(config, Prompter())
    except Aborted as e:
        print(f"\nAborted: {e}.")
        return 1
    run_config = Path(cfg.get("output_root", "output")) / "wizard_config.yaml"
    write_text(run_config, "# Written by the interactive wizard: config.yaml with this run's answers.\n"
               + yaml.safe_dump(cfg, sort_keys=False))
    print(f"\nThis run's configuration: {run_config}")
    if args.dry_run:
        return 0
    return pipeline.main(["--config", str(run_config)])


if __name__ == "__main__":
    sys.exit(main())
