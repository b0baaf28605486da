"""The whole pipeline from one config.yaml: generate -> convert -> pretrain -> fine-tune -> baselines -> report.

Run as `python -m exmed_bert.pipeline --config config.yaml`. config.yaml is read once into every stage's
typed arguments (`exmed_bert.stages.REGISTRY`), the stages' paths are wired together, and each stage's
`run(args)` is called with its object. Each stage logs the equivalent command line, which reruns it by
hand. A stage whose settings and inputs are unchanged since its last successful run is skipped
(`--force` reruns everything).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from exmed_bert.baselines.registry import BASELINES
from exmed_bert.config import Sections, config_path, from_sections, load_yaml, parse_args, to_argv
from exmed_bert.errors import UserError, cli_entry
from exmed_bert.io import write_json
from exmed_bert.stages import REGISTRY, PipelineArgs


@dataclass
class Stage:
    name: str
    args: Any              # the stage's dataclass (stages.REGISTRY), resolved and wired
    script: str            # the guide's script name, for the logged command line
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def plan(p: PipelineArgs, sections: Sections, where: str = "config.yaml") -> tuple[list[Stage], dict[str, str]]:
    """Every stage's settings from config.yaml's sections, with the paths wired from one stage to the next;
    and where the results land. A bad value names the stage it belongs to."""
    data, out = Path(p.dataset_dir), Path(p.output_root)
    ft = out / "finetuned"
    baseline_dir = {b.name: out / b.name for b in BASELINES}
    # the report compares the fine-tuned model with the default baselines and any other one asked for
    compared = [ft, *(baseline_dir[b.name] for b in BASELINES if b.in_default_pipeline or b.name in p.stages)]
    wiring = {
        "generate": {"output": p.patients_file, "task_output": p.task_file},
        "convert": {"input": p.patients_file, "output": str(data / "synthetic.pt"), "task_data": p.task_file},
        "pretrain": {"data_dir": str(data)},
        "finetune": {"task_data": p.task_file, "data_dir": str(data), "output_dir": str(ft)},
        **{name: {"data_dir": str(data), "task_data": p.task_file, "output_dir": str(folder)}
           for name, folder in baseline_dir.items()},
        "report": {"runs": [str(run) for run in compared], "output": str(out / "report.md"),
                   "metadata": _metadata_path(p.patients_file)},
    }
    args = {}
    for name, cls in REGISTRY:
        if name in wiring:
            try:
                args[name] = from_sections(cls, sections, where, overrides=wiring[name])
            except UserError as e:
                raise UserError(f"stage '{name}': {e}") from None
    if args["generate"].format != "json":   # the stages below read the patients file and task CSV it writes
        raise UserError(f"stage 'generate': format {args['generate'].format} is for generate_synthetic_patients.py; "
                        "the pipeline generates JSON (drop format, or convert a MEDS root with its own commands)")
    # the pretrained model's folder says how its code embeddings started (the guide's two layouts)
    clinvec = args["pretrain"].use_clinvec
    model_dir = out / ("with_clinvec" if clinvec else "random_init")
    args["pretrain"] = dataclasses.replace(args["pretrain"], output_dir=str(model_dir))
    args["finetune"] = dataclasses.replace(args["finetune"], model_path=str(model_dir / "checkpoint-best"))
    stages = [
        Stage("generate", args["generate"], "generate_synthetic_patients.py", outputs=[p.patients_file, p.task_file]),
        Stage("convert", args["convert"], "convert_synthetic_to_dataset.py", inputs=[p.patients_file, p.task_file],
              outputs=[str(data / "synthetic_train.pt"), str(data / "vocab.json")]),
        Stage("pretrain", args["pretrain"], "pretrain-exmed-bert-clinvec.py" if clinvec else "pretrain-exmed-bert.py",
              inputs=[str(data / "synthetic_train.pt"), str(data / "synthetic_val.pt"), str(data / "vocab.json")],
              outputs=[str(model_dir / "checkpoint-best")]),
        Stage("finetune", args["finetune"], "finetune-exmed-bert.py",
              inputs=[str(model_dir / "checkpoint-best"), p.task_file, str(data)], outputs=[str(ft / "metrics.json")]),
        *(Stage(b.name, args[b.name], b.script, inputs=[p.task_file, str(data)],
                outputs=[str(baseline_dir[b.name] / "metrics.json")]) for b in BASELINES),
        Stage("report", args["report"], "compare-models.py", inputs=[str(run / "predictions.csv") for run in compared],
              outputs=[str(out / "report.md")]),
    ]
    if not p.generate_data:
        stages = [s for s in stages if s.name != "generate"]
    where_to = {"report": str(out / "report.md"), "pretrained model": str(model_dir / "checkpoint-best"),
                "fine-tuned model": str(ft / "checkpoint-best"), "TensorBoard logs": str(out)}
    return [s for s in stages if s.name in p.stages], where_to


def _metadata_path(patients_file: str) -> str:
    path = Path(patients_file)
    return str(path.with_suffix(".metadata.json")) if path.suffix == ".jsonl" else str(path)


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


def runners() -> dict[str, Callable[[Any], Any]]:
    """Each stage's run(args). Imported when the stages run, not with this module: together they load torch,
    transformers, scikit-learn and matplotlib (5 s, `python -X importtime`), which --help and a settings
    error must not wait for."""
    from exmed_bert.baselines.runner import run as baseline
    from exmed_bert.convert import run as convert
    from exmed_bert.evaluation.report import run as report
    from exmed_bert.synthetic.clinvec_demo import with_demo_release
    from exmed_bert.synthetic.cohort import run as generate
    from exmed_bert.training.finetune import run as finetune
    from exmed_bert.training.pretrain import run as pretrain

    return {"generate": generate, "convert": convert, "pretrain": with_demo_release(pretrain), "finetune": finetune,
            **{b.name: baseline for b in BASELINES}, "report": report}


@cli_entry
def _run_stage(run: Callable[[Any], Any], args: Any) -> None:
    """One stage; its errors become an exit status as its own script's would (`errors.cli_entry`)."""
    run(args)


def run_stage(stage: Stage, run: Callable[[Any], Any], state_dir: Path, force: bool,
              log: Callable[[str], None]) -> None:
    log(f"\n=== stage: {stage.name} ===\n$ python scripts/{stage.script} {shlex.join(to_argv(stage.args))}")
    stamp_path = state_dir / f"{stage.name}.json"
    stamp = {"args": json.loads(json.dumps(dataclasses.asdict(stage.args))), "inputs": fingerprint(stage.inputs)}
    if not force and stamp_path.exists() and all(Path(o).exists() for o in stage.outputs):
        if json.loads(stamp_path.read_text()) == stamp:
            log(f"[skip] {stage.name}: inputs and settings unchanged since the last successful run (--force reruns)")
            return
    t0 = time.time()
    rc = _run_stage(run, stage.args)
    if rc != 0:
        raise StageFailed(stage.name, rc)
    write_json(stamp_path, stamp)
    log(f"[done] {stage.name} in {time.time() - t0:.1f}s")


class StageFailed(Exception):
    def __init__(self, stage: str, rc: int):
        super().__init__(f"stage '{stage}' failed with exit code {rc}")
        self.stage, self.rc = stage, rc


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = config_path(argv)
    sections = load_yaml(config) if config else {None: {}}  # the one read of config.yaml
    p = parse_args(PipelineArgs, argv, prog="python -m exmed_bert.pipeline", sections=sections)
    # Every stage's settings are checked before any runs, so a typo in the last stage costs no training.
    stages, where = plan(p, sections, config or "config.yaml")
    run = runners()
    state_dir = Path(p.output_root) / ".pipeline"
    t0 = time.time()
    for stage in stages:
        try:
            run_stage(stage, run[stage.name], state_dir, p.force, log=lambda s: print(s, flush=True))
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
