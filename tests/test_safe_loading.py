"""Nothing the project loads executes code, and nothing it writes lands outside the folders the user named.

A planted pickle whose `__reduce__` runs `os.system("touch <marker>")` is disguised as a dataset `.pt`,
as a model checkpoint (`pytorch_model.bin`, no `model.safetensors`) and as a resumable Trainer checkpoint;
every loader must refuse it and the marker must never appear. A source scan forbids unsafe loaders.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import uuid
from pathlib import Path

import pytest

from conftest import REPO, run_script


class Evil:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture()
def marker(tmp_path) -> Path:
    path = tmp_path / f"PWNED-{uuid.uuid4().hex}"
    yield path
    assert not path.exists(), "the planted pickle executed code"


def plant_torch(path: Path, marker: Path) -> Path:
    """A torch.save zip archive holding the malicious object (what a poisoned .pt/.bin looks like)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "exmed-bert-dataset", "version": 1, "payload": Evil(marker)}, path)
    return path


def plant_raw_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(Evil(marker)))
    return path


def test_the_planted_pickle_really_is_malicious(tmp_path):
    """Guard: the payload fires under an unsafe load, so the refusals below mean something."""
    import torch

    probe = tmp_path / "probe-marker"
    torch.load(plant_torch(tmp_path / "x.pt", probe), weights_only=False)
    assert probe.exists()


# -- datasets ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("plant", [plant_torch, plant_raw_pickle])
def test_dataset_loader_refuses_a_malicious_pt(plant, tmp_path, marker):
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.errors import UserError

    path = plant(tmp_path / "synthetic_train.pt", marker)
    with pytest.raises(UserError, match="synthetic_train.pt"):
        PatientDataset.load(path)


def test_example_load_cli_refuses_a_malicious_pt(tmp_path, marker):
    path = plant_torch(tmp_path / "data" / "synthetic_train.pt", marker)
    p = run_script("example_load_synthetic_data.py", "--data", path, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "synthetic_train.pt" in lines[0] and "Traceback" not in p.stderr, p.stderr


# -- checkpoints ------------------------------------------------------------------------------------

def poisoned_model_folder(tiny_model: Path, dest: Path, marker: Path) -> Path:
    """The tiny checkpoint with its safetensors weights swapped for a malicious pytorch_model.bin."""
    shutil.copytree(tiny_model, dest)
    (dest / "model.safetensors").unlink()
    plant_torch(dest / "pytorch_model.bin", marker)
    return dest


def test_finetune_cli_refuses_a_pickled_checkpoint(tiny_model, tiny_data, tiny_cohort, tmp_path, marker):
    model = poisoned_model_folder(tiny_model, tmp_path / "model", marker)
    data = shutil.copytree(tiny_data, tmp_path / "data")
    p = run_script("finetune-exmed-bert.py", "--model-path", model, "--data-dir", data, "--task-data",
                   tiny_cohort["task"], "--output-dir", tmp_path / "ft", "--max-steps", "1", "--device", "cpu",
                   cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "model" in lines[0] and "Traceback" not in p.stderr, p.stderr[-2000:]


@pytest.mark.parametrize("use_safetensors", [True, None])
def test_model_from_pretrained_refuses_a_pickled_checkpoint(use_safetensors, tiny_model, tmp_path, marker):
    """Also the plain `from_pretrained` a user would call: a .bin is read with weights_only=True."""
    from exmed_bert.model.modeling import ExMedBertForSequenceClassification

    model = poisoned_model_folder(tiny_model, tmp_path / "model", marker)
    with pytest.raises(Exception):  # noqa: B017 - OSError or UnpicklingError, depending on the path taken
        ExMedBertForSequenceClassification.from_pretrained(model, num_labels=2, use_safetensors=use_safetensors)


def test_resume_refuses_a_pickled_trainer_state(tiny_model, tiny_data, tmp_path, marker):
    """A checkpoint-N whose rng_state.pth carries the payload: resuming must stop, not run it."""
    out = tmp_path / "model"
    ckpt = next(tiny_model.parent.glob("checkpoint-[0-9]*"))
    shutil.copytree(ckpt, out / ckpt.name)
    plant_torch(out / ckpt.name / "rng_state.pth", marker)
    p = run_script("pretrain-exmed-bert.py", "--data-dir", tiny_data, "--output-dir", out, "--model-size", "tiny",
                   "--max-steps", "4", "--device", "cpu", "--resume-from-checkpoint", "auto", cwd=tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith(("error", "internal error"))]
    assert lines and "rng_state.pth" in lines[-1] and "Traceback" not in p.stderr, p.stderr[-2000:]


# -- source scan ------------------------------------------------------------------------------------

SOURCES = sorted([*(REPO / "exmed_bert").rglob("*.py"), *(REPO / "scripts").glob("*.py")])


def unsafe_calls(path: Path, root: Path = REPO) -> list[str]:
    """Calls that can execute code from a file: torch.load without weights_only=True, pickle/joblib/dill
    loads, numpy allow_pickle=True, pandas read_pickle, and trust_remote_code=True."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        where = f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)[:120]}"
        if name.endswith("torch.load"):
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(where)
        if name in ("pickle.load", "pickle.loads", "cPickle.load", "joblib.load", "dill.load", "dill.loads",
                    "cloudpickle.load", "cloudpickle.loads", "pd.read_pickle", "pandas.read_pickle",
                    "pickle.Unpickler", "shelve.open", "marshal.load", "marshal.loads"):
            found.append(where)
        for flag in ("trust_remote_code", "allow_pickle"):
            v = kw.get(flag)
            if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                found.append(where)
    return found


def test_no_source_file_uses_an_unsafe_loader():
    assert len(SOURCES) > 20, "the scan found too few files to be looking in the right place"
    found = [hit for path in SOURCES for hit in unsafe_calls(path)]
    assert not found, "unsafe loads:\n" + "\n".join(found)


def test_the_source_scan_catches_unsafe_calls(tmp_path):
    """Guard for the scan itself."""
    bad = tmp_path / "exmed_bert" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import torch, pickle\n"
                   "a = torch.load('x')\n"
                   "b = torch.load('x', weights_only=False)\n"
                   "c = torch.load('x', weights_only=True)\n"
                   "d = pickle.load(open('x', 'rb'))\n"
                   "e = M.from_pretrained('x', trust_remote_code=True)\n")
    hits = unsafe_calls(bad, root=tmp_path)
    assert [h.split(":")[1] for h in hits] == ["2", "3", "5", "6"], hits


# -- output paths -----------------------------------------------------------------------------------

def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_patient_ids_cannot_place_files_outside_the_output_folder(tmp_path):
    """Hostile ids ('../../x', absolute paths, Windows separators) are data, never path parts."""
    tag = uuid.uuid4().hex
    hostile = [f"../../escape-{tag}", f"/tmp/escape-{tag}", f"..\\..\\escape-{tag}", f"sub/../../escape-{tag}",
               f"escape-{tag}\x00.pt", "", f"{'../' * 30}escape-{tag}"]
    patients = [{"patient_id": pid, "birth_date": "1960-01-01", "sex": "F",
                 "diagnoses": [{"code": "E11.9", "date": "2020-01-10"}, {"code": "I10", "date": "2020-03-01"}],
                 "prescriptions": [{"code": "A10BA02", "date": "2020-01-11"}]}
                for pid in [*hostile, *(f"P{i:02d}" for i in range(20))]]
    inp = tmp_path / "in" / "patients.json"
    inp.parent.mkdir()
    inp.write_text(json.dumps({"patients": patients}), encoding="utf-8")
    task = tmp_path / "in" / "task.csv"
    task.write_text("patient_id,label,prediction_date\n" + "".join(
        f"{p['patient_id']},{i % 2},2021-01-01\n" for i, p in enumerate(patients) if "," not in p["patient_id"]
        and "\x00" not in p["patient_id"] and p["patient_id"]), encoding="utf-8")
    cwd = tmp_path / "deep" / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    out = cwd / "out"
    before = files_under(tmp_path)
    p = run_script("convert_synthetic_to_dataset.py", "--input", inp, "--output", out / "synthetic.pt",
                   "--task-data", task, cwd=cwd)
    assert p.returncode == 0, p.stderr[-2000:]
    new = files_under(tmp_path) - before
    assert new and all(out in f.parents for f in new), sorted(map(str, new - {f for f in new if out in f.parents}))
    assert not list(Path("/tmp").glob(f"escape-{tag}*")) and not list(tmp_path.parent.rglob(f"escape-{tag}*"))


def test_pretraining_writes_nothing_into_the_working_directory(tiny_model):
    """TensorBoard, MLflow and HF defaults (./runs, ./mlruns, ./wandb) must not fall back to the cwd;
    conftest's tiny_model runs from <tmp>/cwd with --output-dir <tmp>/model."""
    cwd = tiny_model.parents[1] / "cwd"
    assert cwd.is_dir()
    assert not list(cwd.rglob("*")), sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
