"""The whole pipeline on ~80 patients: every stage's main(), skipping unchanged stages, failures."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from exmed_bert import pipeline
from exmed_bert.stages import DEFAULT_STAGES, STAGES

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(path: Path, **changes: dict) -> Path:
    """The repo's config.yaml, tiny; `changes`: {stage: {key: value}} set in those sections."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["generate"].update(num_patients=80)
    cfg["convert"].update(max_length=64)
    cfg["pretrain"].update(model_size="tiny", num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                           num_attention_heads=1, num_epochs=1, batch_size=8)
    cfg["finetune"].update(num_epochs=1)
    cfg["rf"], cfg["xgboost"] = {"n_estimators": 10}, {"n_estimators": 10}
    for stage, values in changes.items():
        cfg[stage].update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_pipeline_end_to_end_skip_force_and_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path / "config.yaml")
    assert pipeline.main(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    for stage in STAGES:   # without a stages: key, config.yaml runs the default ones (not the optional baselines)
        assert (f"=== stage: {stage} ===" in out) == (stage in DEFAULT_STAGES)
    assert "Pipeline finished" in out and "tensorboard --logdir output" in out
    for path in ["data/synthetic_patients.json", "data/task_specific.csv", "pretrain_stuff/synthetic_train.pt",
                 "pretrain_stuff/vocab.json", "output/with_clinvec/checkpoint-best/model.safetensors",
                 "output/with_clinvec/clinvec_coverage.json", "output/finetuned/metrics.json",
                 "output/rf/metrics.json", "output/xgboost/model.json", "output/report.md"]:
        assert (tmp_path / path).is_file(), path
    report = (tmp_path / "output/report.md").read_text()
    assert "Random Forest" in report and "XGBoost" in report and "oracle" in report.lower()

    # The logged command reruns a stage by hand and gives the same bytes.
    line = next(ln for ln in out.splitlines() if ln.startswith("$ python scripts/generate_synthetic_patients.py"))
    argv = shlex.split(line)[3:] + ["--output", "again.json", "--task-output", "again.csv"]
    from exmed_bert.cli.generate import main as generate

    assert generate(argv) == 0
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "data/synthetic_patients.json").read_bytes()

    # Nothing changed: every stage is skipped.
    assert pipeline.main(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count("[skip]") == len(DEFAULT_STAGES)

    # --force reruns, here limited to one cheap stage.
    assert pipeline.main(["--config", str(cfg), "--stages", "rf", "--force"]) == 0
    assert "[done] rf" in capsys.readouterr().out

    # Bad settings of any stage are reported before anything runs, naming the stage.
    bad = tiny_config(tmp_path / "bad.yaml", pretrain={"hidden_size": 33, "num_attention_heads": 2})
    assert pipeline.main(["--config", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "stage 'pretrain': " in captured.err and "not divisible" in captured.err

    # A stage failing while it runs stops the pipeline with its exit code and names the stage.
    (tmp_path / "broken.json").write_text('{"patients": [}')
    bad = tiny_config(tmp_path / "bad.yaml", pipeline={"generate_data": False, "patients_file": "broken.json"})
    assert pipeline.main(["--config", str(bad)]) == 2
    captured = capsys.readouterr()
    assert "=== stage: convert ===" in captured.out and "=== stage: pretrain ===" not in captured.out
    assert "stage 'convert' failed with exit code 2" in captured.err
    assert "Traceback" not in captured.err


def test_unknown_stage_and_key_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path / "config.yaml")
    assert pipeline.main(["--config", str(cfg), "--stages", "pretrain,fintune"]) == 2
    assert "stages must be one of" in capsys.readouterr().err
    cfg.write_text(cfg.read_text() + "num_epoch: 3\n")
    assert pipeline.main(["--config", str(cfg)]) == 2
    assert "unknown key 'num_epoch'; did you mean 'num_epochs'?" in capsys.readouterr().err


def test_every_default_config_key_is_known():
    from exmed_bert.config import load_yaml

    sections = load_yaml(ROOT / "config.yaml")
    assert sections["generate"]["num_patients"] == 1000
    assert json.dumps(sections)  # plain data, all keys valid (load_yaml raises on any unknown key)


def test_config_is_read_once_into_typed_stage_arguments(tmp_path, monkeypatch, capsys):
    """One read of config.yaml; every stage gets its dataclass (paths wired, architecture resolved) through
    run(args), never a command line to re-parse; unchanged stages are skipped on the next run."""
    import exmed_bert.config as config
    from exmed_bert.training.args import FinetuneArgs, PretrainArgs

    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path / "config.yaml", pretrain={"model_size": "medium", "learning_rate": 0.002})
    for key in ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads"):
        cfg.write_text(cfg.read_text().replace(f"{key}:", f"# {key}:"))
    reads, seen = [], {}
    real_read = config._read
    monkeypatch.setattr(config, "_read", lambda path: reads.append(path) or real_read(path))

    def fake(name):
        def run(args):
            seen[name] = args
            for out in {"generate": [args.output, args.task_output] if name == "generate" else []}.get(name, []):
                Path(out).parent.mkdir(parents=True, exist_ok=True)
                Path(out).write_text("x")
        return run

    monkeypatch.setattr(pipeline, "runners", lambda: {s: fake(s) for s in STAGES})
    assert pipeline.main(["--config", str(cfg), "--stages", "generate,pretrain,finetune"]) == 0
    assert len(reads) == 1
    pre, ft = seen["pretrain"], seen["finetune"]
    assert isinstance(pre, PretrainArgs) and isinstance(ft, FinetuneArgs)
    assert pre.learning_rate == 0.002 and isinstance(pre.learning_rate, float)
    assert (pre.num_hidden_layers, pre.hidden_size, pre.intermediate_size, pre.num_attention_heads) == (4, 128, 256, 4)
    assert pre.output_dir == str(Path("output") / "with_clinvec") and pre.data_dir == "pretrain_stuff"
    assert ft.model_path == str(Path("output") / "with_clinvec" / "checkpoint-best")
    out = capsys.readouterr().out
    assert "--learning-rate 0.002" in out and "--hidden-size 128" in out  # the command that reruns it by hand
    assert "[done] generate" in out
    assert pipeline.main(["--config", str(cfg), "--stages", "generate"]) == 0
    assert "[skip] generate" in capsys.readouterr().out
