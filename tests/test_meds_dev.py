"""ExMed-BERT as a MEDS-DEV model (meds_dev/exmed_bert/): model.yaml's three commands, rendered as MEDS-DEV
renders them, run in order on a tiny MEDS root and label folder, and their predictions checked with
meds-evaluation; plus the predict command's own behaviour (predict-exmed-bert.py).

MEDS-DEV's runner (`meds-dev-model`, meds-dev 0.0.14) cannot run here: it pins meds==0.3.3 and
meds-evaluation==0.0.3 (the project tests with meds 0.4), runs only models inside its own package, and
pip-installs each model's requirements.txt into a fresh virtual environment. So `render` below follows its
`MEDS_DEV.models.model_commands` for mode=full, dataset_type=full: `str.format` with dataset_dir, model_dir,
demo, output_dir, labels_dir, model_initialization_dir (the previous stage's output_dir) and split
(held_out, predict only); each command runs as a bash script under `set -e`, as its `run_in_env` does.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from exmed_bert.cli.generate import main as generate_main
from exmed_bert.cli.predict import main as predict_main

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "meds_dev" / "exmed_bert"
PredictionSchema = pytest.importorskip("meds_evaluation.schema").PredictionSchema  # requirements-dev.txt

UNKNOWN_SUBJECT = 999_999  # a held-out label row whose subject the MEDS root lacks


def write_tiny_meds_root(work: Path, n: int = 120) -> tuple[Path, Path]:
    """A generated MEDS root (data/<split>/0.parquet, metadata/subject_splits.parquet) and its planted task as a
    label folder with a file per split (labels/<split>/0.parquet), as `meds-dev-task` writes ACES output.
    held_out/1.parquet adds two rows: one at a time before any event of its subject (scored from a [CLS]-only
    history) and one for a subject the root lacks (no prediction, a counted skip)."""
    root = work / "meds"
    rc = generate_main(["-n", str(n), "--seed", "3", "--format", "meds", "--output", str(root)])
    assert rc == 0
    labels = work / "labels"
    shutil.copytree(root / "task_labels" / "hf", labels)
    held_out = pq.read_table(labels / "held_out" / "0.parquet")
    pq.write_table(pa.table({
        "subject_id": pa.array([held_out["subject_id"][0].as_py(), UNKNOWN_SUBJECT], pa.int64()),
        "prediction_time": pa.array([dt.datetime(1900, 1, 1, 12), dt.datetime(2022, 1, 1, 12)], pa.timestamp("us")),
        "boolean_value": [False, True]}), labels / "held_out" / "1.parquet")
    return root, labels


def render(commands: dict, *, dataset_dir: Path, labels_dir: Path, output_dir: Path, dataset_name: str,
           task_name: str, demo: bool) -> list[tuple[str, Path]]:
    """(command, its output dir) for every stage, in MEDS-DEV's order, as its model_commands yields them for
    mode=full and dataset_type=full."""
    kwargs: dict = {"dataset_dir": str(dataset_dir), "model_dir": str(MODEL_DIR), "demo": demo}
    out = []
    for mode in ("train", "predict"):
        for dataset_type in ("unsupervised", "supervised"):
            template = (commands.get(dataset_type) or {}).get(mode)
            if not template:
                continue
            run_dir = output_dir / dataset_name
            if dataset_type == "supervised":
                run_dir = run_dir / task_name
                kwargs["labels_dir"] = str(labels_dir)
            else:
                run_dir = run_dir / dataset_type
            run_dir = run_dir / mode
            kwargs["output_dir"] = str(run_dir)
            if mode == "predict":
                kwargs["split"] = "held_out"
            else:
                kwargs.pop("split", None)
            out.append((template.format(**kwargs), run_dir))
            if mode != "predict":
                kwargs["model_initialization_dir"] = str(run_dir)
    return out


def run_like_meds_dev(cmd: str, run_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    """One command as MEDS-DEV's run_in_env runs it: a bash script `set -e` + the command, in an environment
    whose `python` is the model's (here: this interpreter, with the repository importable)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / "cmd.sh"
    script.write_text("\n".join(["#!/bin/bash", "set -e", cmd]))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    env.pop("EXMED_DEBUG", None)
    return subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def meds_dev_run(tmp_path_factory):
    """The three commands of model.yaml run in MEDS-DEV's order with demo=true on a tiny MEDS root."""
    work = tmp_path_factory.mktemp("meds_dev")
    root, labels = write_tiny_meds_root(work)
    commands = yaml.safe_load((MODEL_DIR / "model.yaml").read_text())["commands"]
    stages = render(commands, dataset_dir=root, labels_dir=labels, output_dir=work / "exp", dataset_name="tiny",
                    task_name="planted", demo=True)
    for cmd, run_dir in stages:
        p = run_like_meds_dev(cmd, run_dir, cwd=work)
        assert p.returncode == 0, f"{cmd}\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}"
    return {"work": work, "root": root, "labels": labels, "stages": stages,
            "predictions": stages[-1][1] / "predictions.parquet"}


def test_model_folder_follows_the_meds_dev_template():
    spec = yaml.safe_load((MODEL_DIR / "model.yaml").read_text())
    assert set(spec) == {"metadata", "commands"}
    assert spec["metadata"]["description"].strip() and spec["metadata"]["contacts"][0]["name"]
    assert all(link.startswith("https://") for link in spec["metadata"]["links"])
    assert set(spec["commands"]) == {"unsupervised", "supervised"}
    assert set(spec["commands"]["unsupervised"]) == {"train"}
    assert set(spec["commands"]["supervised"]) == {"train", "predict"}
    for name in ("README.md", "requirements.txt", "refs.bib", "settings.yaml", "settings_demo.yaml"):
        assert (MODEL_DIR / name).is_file(), name
    readme = (MODEL_DIR / "README.md").read_text(encoding="utf-8")
    for heading in ("## Description", "## Computational requirements", "## Dependencies", "## How to run"):
        assert heading in readme, heading
    refs = (MODEL_DIR / "refs.bib").read_text(encoding="utf-8")
    assert refs.count("@") >= 3 and "Lentzen" in refs and "Rasmy" in refs and "ClinVec" in refs


def test_every_placeholder_is_one_meds_dev_fills():
    """A placeholder MEDS-DEV does not fill would stop its str.format; a brace meant for bash would too."""
    import string

    filled = {"dataset_dir", "labels_dir", "output_dir", "model_dir", "demo", "split", "model_initialization_dir"}
    spec = yaml.safe_load((MODEL_DIR / "model.yaml").read_text())
    for dataset_type, modes in spec["commands"].items():
        for mode, template in modes.items():
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
            assert names <= filled, (dataset_type, mode, names - filled)
            if mode == "predict":
                assert "{split}" in template and "{output_dir}/predictions.parquet" in template


def test_demo_selects_the_tiny_settings(tmp_path):
    spec = yaml.safe_load((MODEL_DIR / "model.yaml").read_text())["commands"]
    for demo, expected in ((True, "settings_demo.yaml"), (False, "settings.yaml")):
        cmd, _ = render(spec, dataset_dir=tmp_path, labels_dir=tmp_path, output_dir=tmp_path, dataset_name="d",
                        task_name="t", demo=demo)[0]
        # the command's own shell decides; run its first two lines and print what it chose
        head = "\n".join(cmd.splitlines()[:2]) + '\necho "$SETTINGS"'
        p = subprocess.run(["bash", "-c", head], capture_output=True, text=True, timeout=30)
        assert Path(p.stdout.strip()).name == expected, (demo, p.stdout, p.stderr)
    demo_settings = yaml.safe_load((MODEL_DIR / "settings_demo.yaml").read_text())
    assert demo_settings["pretrain"]["model_size"] == "tiny" and demo_settings["finetune"]["num_epochs"] <= 1


@pytest.mark.slow
def test_meds_dev_commands_run_in_order_and_meds_evaluation_accepts_the_predictions(meds_dev_run):
    stages = meds_dev_run["stages"]
    assert [d.relative_to(meds_dev_run["work"] / "exp").as_posix() for _, d in stages] == [
        "tiny/unsupervised/train", "tiny/planted/train", "tiny/planted/predict"]
    unsup, sup, pred = (d for _, d in stages)
    assert (unsup / "model" / "checkpoint-best" / "model.safetensors").is_file()
    assert (sup / "finetuned" / "checkpoint-best" / "model.safetensors").is_file()
    table = pq.read_table(meds_dev_run["predictions"])
    PredictionSchema.validate(table)   # strict: int64 ids, float32 probabilities, as written (no cast)

    # every held-out label row, at its own subject and prediction time, but the one whose subject is unknown
    held_out = pq.read_table(meds_dev_run["labels"] / "held_out").to_pydict()
    label = {(s, t): y for s, t, y in zip(held_out["subject_id"], held_out["prediction_time"],
                                          held_out["boolean_value"])}
    got = table.to_pydict()
    keys = list(zip(got["subject_id"], got["prediction_time"]))
    assert len(keys) == len(set(keys)) == len(label) - 1
    assert set(keys) == {k for k in label if k[0] != UNKNOWN_SUBJECT}
    assert [label[k] for k in keys] == got["boolean_value"]
    rejected = list(csv.DictReader(open(pred / "task_rejected.csv", encoding="utf-8")))
    assert [r["patient_id"] for r in rejected] == [str(UNKNOWN_SUBJECT)]

    # predicted_boolean_value applies the threshold fine-tuning chose on the tuning split
    threshold = json.loads((sup / "finetuned" / "metrics.json").read_text())["threshold"]
    p = np.asarray(got["predicted_boolean_probability"], dtype=np.float32)
    assert got["predicted_boolean_value"] == (p >= np.float32(threshold)).tolist()

    # the same held-out rows and probabilities as fine-tuning's own test predictions
    own = pq.read_table(sup / "finetuned" / "predictions.parquet").to_pydict()
    theirs = dict(zip(zip(own["subject_id"], own["prediction_time"]), own["predicted_boolean_probability"]))
    assert sorted(theirs) == sorted(keys)
    np.testing.assert_allclose(p, [theirs[k] for k in keys], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_meds_evaluation_cli_reads_the_predict_output(meds_dev_run):
    """As `meds-dev-evaluation` runs it: meds-evaluation-cli on the predict stage's output."""
    out = meds_dev_run["work"] / "evaluation.json"
    cli = Path(sys.executable).parent / "meds-evaluation-cli"
    e = subprocess.run([str(cli), f"predictions_path={meds_dev_run['predictions']}", f"output_file={out}"],
                       cwd=meds_dev_run["work"], capture_output=True, text=True, timeout=300)
    assert e.returncode == 0, e.stderr[-3000:]
    result = json.loads(out.read_text())["samples_equally_weighted"]
    sup = meds_dev_run["stages"][1][1]
    ours = json.loads((sup / "finetuned" / "metrics.json").read_text())["metrics"]["auroc"]["value"]
    assert result["roc_auc_score"] == pytest.approx(ours, abs=5e-4)


# ---------------------------------------------------------------------------------------------------------
# predict-exmed-bert.py on its own


@pytest.mark.slow
def test_predict_splits_threshold_flag_and_mapped_split_names(meds_dev_run, tmp_path, capsys):
    sup = meds_dev_run["stages"][1][1]
    base = ["--model-path", str(sup / "finetuned"), "--data-dir", str(sup / "data"),
            "--task-data", str(meds_dev_run["labels"])]
    assert predict_main([*base, "--split", "test", "--output", str(tmp_path / "test.parquet")]) == 0
    assert predict_main([*base, "--split", "held_out", "--output", str(tmp_path / "held_out.parquet")]) == 0
    assert pq.read_table(tmp_path / "test.parquet").equals(pq.read_table(tmp_path / "held_out.parquet"))
    assert predict_main([*base, "--split", "tuning", "--output", str(tmp_path / "val.parquet")]) == 0
    tuning = pq.read_table(meds_dev_run["labels"] / "tuning" / "0.parquet").to_pydict()
    val = pq.read_table(tmp_path / "val.parquet").to_pydict()
    assert set(val["subject_id"]) <= set(tuning["subject_id"]) and val["subject_id"]
    assert predict_main([*base, "--split", "all", "--threshold", "0", "--output", str(tmp_path / "all.parquet")]) == 0
    every = pq.read_table(tmp_path / "all.parquet")
    PredictionSchema.validate(every)
    assert all(every["predicted_boolean_value"].to_pylist())          # threshold 0: every row predicted true
    train = pq.read_table(meds_dev_run["labels"] / "train")
    assert every.num_rows == sum(pq.read_table(tmp_path / f"{s}.parquet").num_rows for s in ("test", "val")) + train.num_rows
    assert "--threshold" in capsys.readouterr().out


@pytest.mark.slow
def test_predict_refuses_bad_input_with_one_line(meds_dev_run, tmp_path, capsys):
    unsup, sup, _ = (d for _, d in meds_dev_run["stages"])
    base = ["--data-dir", str(sup / "data"), "--task-data", str(meds_dev_run["labels"])]
    cases = [
        (["--model-path", str(tmp_path / "nowhere")], "model folder not found"),
        (["--model-path", str(unsup / "model" / "checkpoint-best")], "not a fine-tuned one"),
        (["--model-path", str(sup / "finetuned"), "--output", str(tmp_path / "p.csv")], "give a .parquet path"),
        (["--model-path", str(sup / "finetuned"), "--threshold", "1.5"], "between 0 and 1"),
        (["--model-path", str(sup / "finetuned"), "--split", "dev"], "--split must be one of"),
    ]
    for extra, message in cases:
        assert predict_main([*base, "--output", str(tmp_path / "p.parquet"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
        assert not (tmp_path / "p.parquet").exists()


@pytest.mark.slow
def test_predict_without_metrics_json_needs_a_threshold(meds_dev_run, tmp_path, capsys):
    import shutil

    sup = meds_dev_run["stages"][1][1]
    model = tmp_path / "model"
    shutil.copytree(sup / "finetuned" / "checkpoint-best", model)   # no metrics.json beside this copy
    args = ["--model-path", str(model), "--data-dir", str(sup / "data"), "--task-data", str(meds_dev_run["labels"]),
            "--output", str(tmp_path / "p.parquet")]
    assert predict_main(args) == 2
    assert "pass --threshold" in capsys.readouterr().err
    assert predict_main([*args, "--threshold", "0.5"]) == 0
    got = pq.read_table(tmp_path / "p.parquet").to_pydict()
    assert got["predicted_boolean_value"] == [p >= 0.5 for p in got["predicted_boolean_probability"]]

