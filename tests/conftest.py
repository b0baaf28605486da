"""Shared session fixtures: one tiny generated cohort, its conversion and a tiny pretrained model.

Built once per test session through the real stage entry points, so any test can point a command at
them. Treat them as read-only: copy a fixture before running a stage that writes next to its input.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def script_env(**extra: str) -> dict[str, str]:
    """Environment for running scripts/*.py as a user would: repo importable, one thread, no debug."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONIOENCODING": "utf-8", **extra}
    env.pop("EXMED_DEBUG", None)
    return env


def run_script(script: str, *args: str, cwd: str | os.PathLike, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python scripts/<script> args...` in `cwd`; returns the finished process (text stdout/stderr)."""
    return subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], cwd=cwd, env=script_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> dict[str, Path]:
    """50 generated patients: {"patients": patients.json, "task": task.csv}."""
    from exmed_bert.cli.generate import main

    d = tmp_path_factory.mktemp("tiny_cohort")
    paths = {"patients": d / "patients.json", "task": d / "task.csv"}
    rc = main(["--num-patients", "50", "--seed", "7", "--output", str(paths["patients"]),
               "--task-output", str(paths["task"])])
    assert rc == 0, "generating the tiny cohort failed"
    return paths


@pytest.fixture(scope="session")
def tiny_data(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny cohort converted (with task datasets): a --data-dir holding synthetic_{train,val,test}.pt."""
    from exmed_bert.cli.convert import main

    d = tmp_path_factory.mktemp("tiny_data")
    rc = main(["--input", str(tiny_cohort["patients"]), "--output", str(d / "synthetic.pt"),
               "--task-data", str(tiny_cohort["task"]), "--max-length", "128"])
    assert rc == 0, "converting the tiny cohort failed"
    return d


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory) -> Path:
    """A tiny model pretrained for 2 steps on tiny_data; returns <tmp>/model/checkpoint-best (beside it:
    checkpoint-2, and <tmp>/cwd, the empty working directory the run used).

    Runs in a subprocess: pretraining sets process-wide logging and environment state.
    """
    out = tmp_path_factory.mktemp("tiny_model")
    (out / "cwd").mkdir()  # kept empty: test_safe_loading checks nothing is written to the working directory
    p = run_script("pretrain-exmed-bert.py", "--data-dir", tiny_data, "--output-dir", out / "model",
                   "--model-size", "tiny", "--max-steps", "2", "--device", "cpu", "--save-steps", "2",
                   "--eval-steps", "2", cwd=out / "cwd")
    best = out / "model" / "checkpoint-best"
    assert p.returncode == 0 and best.is_dir(), f"pretraining the tiny model failed:\n{p.stderr[-2000:]}"
    return best
