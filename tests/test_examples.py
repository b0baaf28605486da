"""Every script in examples/ runs end to end on tiny settings, chained as a user would run them:
generate_and_inspect -> pretrain_tiny -> finetune_tiny -> embed_patients / predict_finetuned."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CHAIN = ["generate_and_inspect.py", "pretrain_tiny.py", "finetune_tiny.py", "embed_patients.py",
         "predict_finetuned.py"]


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONIOENCODING": "utf-8"}
    env.pop("EXMED_DEBUG", None)
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def example_main(name: str):
    """The example's main(argv), imported from its file: for the steps that set no process-wide state."""
    spec = importlib.util.spec_from_file_location(name[:-3], EXAMPLES / name)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The examples' shared folder after the generate, pretrain and fine-tune examples (--tiny)."""
    work = tmp_path_factory.mktemp("examples")
    assert example_main("generate_and_inspect.py")(["--workdir", str(work), "--tiny"]) == 0
    # pretraining and fine-tuning set process-wide logging and environment state: a process each
    for name in CHAIN[1:3]:
        p = run_example(name, "--workdir", str(work), "--tiny", cwd=work)
        assert p.returncode == 0, f"{name} failed:\n{p.stdout[-1500:]}\n{p.stderr[-3000:]}"
        (work / f"{name}.out").write_text(p.stdout)
    return work


def test_every_example_is_in_the_chain_and_documented():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(CHAIN)
    readme = (EXAMPLES / "README.md").read_text()
    for name in scripts:
        source = (EXAMPLES / name).read_text()
        assert source.startswith('"""') and "python examples/" + name in source, f"{name}: docstring with usage"
        assert name in readme, f"examples/README.md does not mention {name}"


@pytest.mark.slow
def test_generate_and_inspect_decodes_a_patient(tmp_path, capsys):
    assert example_main("generate_and_inspect.py")(["--workdir", str(tmp_path), "--tiny", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "generated 50 patients" in out
    assert "visit   1" in out and "icd10cm:" in out  # a decoded visit with real codes
    for f in ("synthetic_train.pt", "synthetic_task_test.pt", "vocab.json"):
        assert (tmp_path / "pretrain_stuff" / f).is_file(), f


@pytest.mark.slow
def test_pretrain_tiny_leaves_a_complete_best_model(workdir):
    best = workdir / "model" / "checkpoint-best"
    assert {"config.json", "model.safetensors", "vocab.json"} <= {p.name for p in best.iterdir()}
    assert "top-10 masked accuracy" in (workdir / "pretrain_tiny.py.out").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("suffix,pooling", [(".npy", "cls"), (".csv", "mean")])
def test_embed_patients_gives_one_vector_per_patient(workdir, suffix, pooling):
    import torch

    from exmed_bert.data.collate import Collator
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.model.modeling import ExMedBertModel

    out = workdir / f"emb_{pooling}{suffix}"
    assert example_main("embed_patients.py")(["--workdir", str(workdir), "--pooling", pooling,
                                              "--output", str(out)]) == 0
    ds = PatientDataset.load(workdir / "pretrain_stuff" / "synthetic_test.pt")
    if suffix == ".npy":
        emb = np.load(out)
        with open(out.with_name(out.stem + "_ids.csv")) as f:
            ids = [r["patient_id"] for r in csv.DictReader(f)]
    else:
        with open(out) as f:
            rows = list(csv.reader(f))
        ids, emb = [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    model = ExMedBertModel.from_pretrained(workdir / "model" / "checkpoint-best").eval()
    assert emb.shape == (len(ds), model.config.hidden_size) and ids == list(ds.patient_ids)
    # the first patient, alone in its batch, gives the same vector
    with torch.no_grad():
        batch = Collator(mlm=False)([ds[0]])
        batch.pop("labels", None)
        ref = model(**batch, pooling=pooling).pooled_output[0].numpy()
    np.testing.assert_allclose(emb[0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_predict_finetuned_reproduces_the_finetuning_test_predictions(workdir):
    out = workdir / "predicted.csv"
    assert example_main("predict_finetuned.py")(["--workdir", str(workdir), "--output", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    with open(workdir / "finetuned" / "predictions.csv") as f:
        reference = {r["patient_id"]: r for r in csv.DictReader(f)}
    assert rows and {r["patient_id"] for r in rows} == set(reference)
    for r in rows:
        assert float(r["p_0"]) + float(r["p_1"]) == pytest.approx(1.0, abs=1e-5)
        assert float(r["p_1"]) == pytest.approx(float(reference[r["patient_id"]]["probability"]), abs=1e-5)
        assert r["label"] == reference[r["patient_id"]]["label"]


@pytest.mark.parametrize("name", ["pretrain_tiny.py", "finetune_tiny.py", "embed_patients.py",
                                  "predict_finetuned.py"])
def test_examples_fail_in_one_line_without_their_inputs(tmp_path, capsys, name):
    assert example_main(name)(["--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(tmp_path) in err
