"""The whole pipeline from one config.yaml: generate -> convert -> pretrain -> fine-tune -> RF -> XGBoost -> report.

Run as `python -m exmed_bert.pipeline --config config.yaml`. Each stage is the same `main(argv)` the
scripts call, so the command line it logs reruns that stage by hand. A stage whose command and inputs are
unchanged since its last successful run is skipped (`--force` reruns everything).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from exmed_bert.config import config_path, parse_args, to_argv
from exmed_bert.errors import UserError, cli_entry

STAGES = ("generate", "convert", "pretrain", "finetune", "rf", "xgboost", "report")


@dataclass
class Args:
    """Run every stage of ExMed-BERT from one config.yaml."""

    yaml_section: ClassVar[str | None] = None
    patients_file: str = field(default="data/synthetic_patients.json",
                               metadata={"help": "patients JSON/JSONL (generated, or your own extract)"})
    task_file: str = field(default="data/task_specific.csv", metadata={"help": "task CSV patient_id,label,prediction_date"})
    dataset_dir: str = field(default="pretrain_stuff", metadata={"help": "folder for the encoded .pt datasets"})
    output_root: str = field(default="output", metadata={"help": "folder for models, baselines and the report"})
    generate_data: bool = field(default=True, metadata={"help": "generate synthetic patients (off: use patients_file as is)"})
    stages: list[str] = field(default_factory=lambda: list(STAGES),
                              metadata={"help": "stages to run, comma-separated", "choices": list(STAGES)})
    force: bool = field(default=False, metadata={"help": "rerun stages even when nothing changed"})

    def validate(self) -> None:
        if self.generate_data is False and "generate" in self.stages and not Path(self.patients_file).exists():
            raise UserError(f"{self.patients_file}: patients file not found (set generate_data: true to make one)")


@dataclass
class Stage:
    name: str
    module: str            # exmed_bert.cli.<module> holding Args and main
    script: str            # the guide's script name, for the logged command line
    args_class: str = "Args"
    main: str = "main"
    overrides: dict = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def plan(p: Args, config: str | None) -> tuple[list[Stage], dict[str, str]]:
    """The stages to run, with their paths wired together, and where the results land."""
    data = Path(p.dataset_dir)
    out = Path(p.output_root)
    try:
        pretrain_args = _resolve("exmed_bert.cli.pretrain", "Args", config, {})
    except UserError as e:
        raise UserError(f"stage 'pretrain': {e}") from None
    model_dir = out / ("with_clinvec" if getattr(pretrain_args, "use_clinvec", False) else "random_init")
    ft, rf, xgb = out / "finetuned", out / "rf", out / "xgboost"
    stages = [
        Stage("generate", "generate", "generate_synthetic_patients.py",
              overrides={"output": p.patients_file, "task_output": p.task_file},
              outputs=[p.patients_file, p.task_file]),
        Stage("convert", "convert", "convert_synthetic_to_dataset.py",
              overrides={"input": p.patients_file, "output": str(data / "synthetic.pt"), "task_data": p.task_file},
              inputs=[p.patients_file, p.task_file], outputs=[str(data / "synthetic_train.pt"), str(data / "vocab.json")]),
        Stage("pretrain", "pretrain",
              "pretrain-exmed-bert-clinvec.py" if getattr(pretrain_args, "use_clinvec", False) else "pretrain-exmed-bert.py",
              overrides={"data_dir": str(data), "output_dir": str(model_dir)},
              inputs=[str(data / "synthetic_train.pt"), str(data / "synthetic_val.pt"), str(data / "vocab.json")],
              outputs=[str(model_dir / "checkpoint-best")]),
        Stage("finetune", "finetune", "finetune-exmed-bert.py",
              overrides={"model_path": str(model_dir / "checkpoint-best"), "task_data": p.task_file,
                         "data_dir": str(data), "output_dir": str(ft)},
              inputs=[str(model_dir / "checkpoint-best"), p.task_file, str(data)], outputs=[str(ft / "metrics.json")]),
        Stage("rf", "baselines", "train-rf.py", args_class="RFArgs", main="main_rf",
              overrides={"data_dir": str(data), "task_data": p.task_file, "output_dir": str(rf)},
              inputs=[p.task_file, str(data)], outputs=[str(rf / "metrics.json")]),
        Stage("xgboost", "baselines", "train-xgboost.py", args_class="XGBArgs", main="main_xgboost",
              overrides={"data_dir": str(data), "task_data": p.task_file, "output_dir": str(xgb)},
              inputs=[p.task_file, str(data)], outputs=[str(xgb / "metrics.json")]),
        Stage("report", "compare", "compare-models.py",
              overrides={"runs": [str(ft), str(rf), str(xgb)], "output": str(out / "report.md"),
                         "metadata": _metadata_path(p.patients_file)},
              inputs=[str(ft / "predictions.csv"), str(rf / "predictions.csv"), str(xgb / "predictions.csv")],
              outputs=[str(out / "report.md")]),
    ]
    if not p.generate_data:
        stages = [s for s in stages if s.name != "generate"]
    where = {"report": str(out / "report.md"), "pretrained model": str(model_dir / "checkpoint-best"),
             "fine-tuned model": str(ft / "checkpoint-best"), "TensorBoard logs": str(out)}
    return [s for s in stages if s.name in p.stages], where


def _metadata_path(patients_file: str) -> str:
    path = Path(patients_file)
    return str(path.with_suffix(".metadata.json")) if path.suffix == ".jsonl" else str(path)


def _resolve(module: str, cls_name: str, config: str | None, overrides: dict):
    mod = importlib.import_module(f"exmed_bert.cli.{module}" if "." not in module else module)
    cls = getattr(mod, cls_name)
    known = set(cls.__dataclass_fields__)
    return parse_args(cls, ["--config", config] if config else [],
                      overrides={k: v for k, v in overrides.items() if k in known})


def fingerprint(paths: list[str]) -> str:
    """Content hash of a stage's inputs (files, or every file below a folder)."""
    h = hashlib.sha256()
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f).encode())
            if f.exists():
                st = f.stat()
                # size + mtime is enough for big binary outputs of our own earlier stages; content for the rest
                h.update(f.read_bytes() if st.st_size < 64 << 20 else f"{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                h.update(b"<missing>")
    return h.hexdigest()


def resolve_stage(stage: Stage, config: str | None):
    """The stage's settings, validated; a bad value names the stage it belongs to."""
    try:
        return _resolve(stage.module, stage.args_class, config, stage.overrides)
    except UserError as e:
        raise UserError(f"stage '{stage.name}': {e}") from None


def run_stage(stage: Stage, args, state_dir: Path, force: bool, log: Callable[[str], None]) -> None:
    from exmed_bert.io import write_json

    mod = importlib.import_module(f"exmed_bert.cli.{stage.module}")
    argv = to_argv(args)
    log(f"\n=== stage: {stage.name} ===\n$ python scripts/{stage.script} {shlex.join(argv)}")
    stamp_path = state_dir / f"{stage.name}.json"
    stamp = {"argv": argv, "inputs": fingerprint(stage.inputs)}
    if not force and stamp_path.exists() and all(Path(o).exists() for o in stage.outputs):
        if json.loads(stamp_path.read_text()) == stamp:
            log(f"[skip] {stage.name}: inputs and settings unchanged since the last successful run (--force reruns)")
            return
    t0 = time.time()
    rc = getattr(mod, stage.main)(argv)
    if rc != 0:
        raise StageFailed(stage.name, rc)
    write_json(state_dir / f"{stage.name}.json", stamp)
    log(f"[done] {stage.name} in {time.time() - t0:.1f}s")


class StageFailed(Exception):
    def __init__(self, stage: str, rc: int):
        super().__init__(f"stage '{stage}' failed with exit code {rc}")
        self.stage, self.rc = stage, rc


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parse_args(Args, argv, prog="python -m exmed_bert.pipeline")
    config = config_path(argv)
    stages, where = plan(p, config)
    state_dir = Path(p.output_root) / ".pipeline"
    # Check every stage's settings before running any, so a typo in the last stage costs no training.
    resolved = [(stage, resolve_stage(stage, config)) for stage in stages]
    t0 = time.time()
    for stage, args in resolved:
        try:
            run_stage(stage, args, state_dir, p.force, log=lambda s: print(s, flush=True))
        except StageFailed as e:
            print(f"error: pipeline stopped: {e}. Fix the message above, then rerun; finished stages are skipped.",
                  file=sys.stderr)
            return e.rc
    print(f"\nPipeline finished in {time.time() - t0:.0f}s.")
    for what, path in where.items():
        print(f"  {what:18s} {path}")
    print(f"\nOpen TensorBoard:  tensorboard --logdir {p.output_root}")
    print("Open the MLflow UI: mlflow ui --backend-store-uri <your tracking URI>  (runs are sent to MLflow only "
          "when mlflow_tracking_uri is set in config.yaml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
