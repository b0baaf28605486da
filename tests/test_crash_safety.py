"""Crash safety of the conversion: kill -9 it at chosen points and check what is left on disk.

Kill points are events, not sleeps (a file replaced, a temp file appearing), so each run dies at the
same stage on a fast or a loaded machine. Afterwards every output file must be complete (datasets load
with `weights_only=True`, JSON parses) and be either the previous run's or the new run's version; leftover
temp files must be hidden `.name.*.tmp` files that no loader mistakes for an output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SCRIPTS, script_env

OUTPUTS = ("synthetic_train.pt", "synthetic_val.pt", "synthetic_test.pt", "vocab.json", "dataset_manifest.json",
           "synthetic_rejected.jsonl", "synthetic_run_config.json")
TEMP = re.compile(r"^\..+\.tmp$")  # exmed_bert.io.atomic_write: .<name>.<random>.tmp beside the target
N_PATIENTS = 10000
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """Two different few-thousand-patient JSONL cohorts: the 'previous' and the 'new' input."""
    from exmed_bert.cli.generate import main

    d = tmp_path_factory.mktemp("crash_cohorts")
    out = {}
    for name, seed in (("old", 1), ("new", 2)):
        out[name] = d / f"{name}.jsonl"
        assert main(["--num-patients", str(N_PATIENTS), "--seed", str(seed), "--output", str(out[name]),
                     "--task-output", str(d / f"{name}_task.csv")]) == 0
    return out


@pytest.fixture(scope="module")
def complete(cohorts, tmp_path_factory) -> dict[str, Path]:
    """A complete conversion of each cohort (copied as the 'previous output' of the overwrite tests)."""
    outs = {}
    for name, path in cohorts.items():
        outs[name] = tmp_path_factory.mktemp(f"crash_ref_{name}")
        p = convert(path, outs[name])
        assert p.wait(RUN_TIMEOUT_S) == 0, p.stderr.read()
    return outs


@pytest.fixture(scope="module")
def reference(complete) -> dict[str, dict[str, str]]:
    """Identity of every output file of each complete conversion."""
    refs = {name: identities(out) for name, out in complete.items()}
    for ref in refs.values():
        assert set(ref) == set(OUTPUTS), sorted(ref)
    assert refs["old"]["vocab.json"] != refs["new"]["vocab.json"], "the two cohorts must differ"
    return refs


def convert(input: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPTS / "convert_synthetic_to_dataset.py"), "--input", str(input),
                             "--output", str(out / "synthetic.pt")], cwd=out, env=script_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def identity(path: Path) -> str:
    """What a file holds, independent of where it was written. Raises if the file is incomplete."""
    if path.suffix == ".pt":
        import torch

        data = torch.load(path, weights_only=True)  # a truncated zip raises here
        assert data["format"] == "exmed-bert-dataset"
        h = hashlib.sha256("\n".join(data["patient_ids"]).encode())
        h.update(data["input_ids"].numpy().tobytes())
        return h.hexdigest()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return hashlib.sha256(json.dumps([json.loads(line) for line in text.splitlines()]).encode()).hexdigest()
    doc = json.loads(text)
    if path.name == "vocab.json":
        return hashlib.sha256(json.dumps(doc["tokens"]).encode()).hexdigest()
    if path.name.endswith("_run_config.json"):  # the run record: which input it was made from
        return json.dumps(Path(doc["args"]["input"]).name)
    return json.dumps([Path(doc["input"]).name, doc["records"], doc["vocab_size"]])  # the manifest


def identities(out: Path) -> dict[str, str]:
    return {p.name: identity(p) for p in out.iterdir() if p.is_file() and not TEMP.match(p.name)}


# Kill points: (description, predicate over (out folder, inodes of the files before the run)).
def _replaced(name: str):
    def hit(out: Path, before: dict[str, int]) -> bool:
        try:
            return os.stat(out / name).st_ino != before.get(name)
        except FileNotFoundError:
            return False
    return hit


def _temp_of(name: str):
    def hit(out: Path, before: dict[str, int]) -> bool:
        return any(n.startswith(f".{name}.") and n.endswith(".tmp") for n in os.listdir(out))
    return hit


def _started(out: Path, before: dict[str, int]) -> bool:
    return True


KILL_POINTS = {
    "at-start": _started,
    "rejects-written": _replaced("synthetic_rejected.jsonl"),
    "vocab-replaced": _replaced("vocab.json"),
    "train-being-written": _temp_of("synthetic_train.pt"),
    "train-replaced": _replaced("synthetic_train.pt"),
}


def kill_at(input: Path, out: Path, point: str) -> bool:
    """Run the conversion and SIGKILL it when the kill point is reached; False if it finished first."""
    before = {p.name: p.stat().st_ino for p in out.iterdir()}
    hit = KILL_POINTS[point]
    p = convert(input, out)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while p.poll() is None:
            if hit(out, before):
                os.kill(p.pid, signal.SIGKILL)
                p.wait(30)
                return True
            if time.monotonic() > deadline:
                pytest.fail(f"conversion did not finish within {RUN_TIMEOUT_S} s")
            time.sleep(0.001)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
        p.stderr.close()
    return False


def check_leftovers(out: Path, allowed: dict[str, set[str]]) -> dict[str, str]:
    """Every file is an output in one of its allowed versions, complete, or a hidden temp file."""
    found = {}
    for p in sorted(out.iterdir()):
        if TEMP.match(p.name):
            assert not p.name.endswith((".pt", ".json", ".jsonl")), f"temp file {p.name} looks like an output"
            continue
        assert p.name in OUTPUTS, f"unexpected file {p.name} after the kill"
        try:
            found[p.name] = identity(p)
        except Exception as e:  # noqa: BLE001 - any failure to read back is a truncated or corrupt output
            pytest.fail(f"{p.name} is incomplete after kill -9: {type(e).__name__}: {e}")
        assert found[p.name] in allowed[p.name], f"{p.name} is neither the previous nor the new complete version"
    return found


@pytest.mark.parametrize("point", ["at-start", "vocab-replaced", "train-being-written", "train-replaced"])
def test_kill_fresh_conversion_leaves_only_complete_files(point, cohorts, reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    if not kill_at(cohorts["new"], out, point):
        pytest.skip(f"the conversion finished before the kill point {point}")
    check_leftovers(out, {k: {v} for k, v in reference["new"].items()})


@pytest.mark.parametrize("point", ["rejects-written", "vocab-replaced", "train-being-written", "train-replaced"])
def test_kill_over_previous_output_keeps_each_file_whole(point, cohorts, complete, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(complete["old"], out)
    if not kill_at(cohorts["new"], out, point):
        pytest.skip(f"the conversion finished before the kill point {point}")
    found = check_leftovers(out, {k: {reference["old"][k], reference["new"][k]} for k in OUTPUTS})
    assert set(found) == set(OUTPUTS), f"a previous output file vanished: {sorted(set(OUTPUTS) - set(found))}"


def test_kill_over_previous_output_never_pairs_mismatched_files(cohorts, complete, reference, tmp_path):
    """The files a later stage reads together (vocab.json + the splits) must come from one run, or else
    be refused: otherwise token ids silently mean different codes. Convert stages its outputs and renames
    them back to back at the end; a kill inside that short window is caught by the vocabulary fingerprint
    every dataset records. Killed right after vocab.json was replaced."""
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab
    from exmed_bert.errors import UserError

    out = tmp_path / "out"
    shutil.copytree(complete["old"], out)
    assert kill_at(cohorts["new"], out, "vocab-replaced"), "the conversion finished before vocab.json was replaced"
    found = check_leftovers(out, {k: {reference["old"][k], reference["new"][k]} for k in OUTPUTS})
    version = {k: "new" if v == reference["new"][k] else "old" for k, v in found.items()}
    vocab = Vocab.load(out / "vocab.json")
    for split in ("train", "val", "test"):
        name = f"synthetic_{split}.pt"
        ds = PatientDataset.load(out / name)
        if version[name] == version["vocab.json"]:
            ds.check_vocab(vocab)
        else:
            with pytest.raises(UserError, match="different vocabulary"):
                ds.check_vocab(vocab)


def test_rerun_after_kill_completes_and_ignores_temp_files(cohorts, reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    if not kill_at(cohorts["new"], out, "train-being-written"):
        pytest.skip("the conversion finished before the kill point")
    stray = [p.name for p in out.iterdir() if TEMP.match(p.name)]
    p = convert(cohorts["new"], out)
    assert p.wait(RUN_TIMEOUT_S) == 0, p.stderr.read()
    assert identities(out) == reference["new"]
    # a stray temp file is never read as data: its name is hidden and ends in .tmp, not .pt
    assert all(not n.endswith(".pt") for n in stray)
