"""The Windows launchers pass the batch-file linter (blinter) with the project's blinter.ini, and keep CRLF
line endings: cmd.exe misreads labels and GOTO in LF-only batch files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = sorted(REPO.glob("*.bat"))


def _blinter() -> list[str]:
    exe = shutil.which("blinter", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("blinter is not installed: it is a dev requirement (requirements-dev.txt)")
    return [exe]


def test_the_guide_launchers_are_there():
    assert {p.name for p in LAUNCHERS} >= {"train.bat", "train_interactive.bat", "run_tests.bat"}


@pytest.mark.parametrize("bat", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_has_crlf_line_endings(bat: Path):
    data = bat.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n") > 0, f"{bat.name}: LF-only lines (see .gitattributes)"


@pytest.mark.parametrize("bat", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_passes_blinter(bat: Path):
    out = subprocess.run([*_blinter(), bat.name, "--config", "blinter.ini", "--fail-on", "style"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_blinter_catches_a_bad_launcher(tmp_path: Path):
    """The lint is live: an LF-only launcher with an unbalanced parenthesis fails it."""
    (tmp_path / "bad.bat").write_bytes(b"@echo off\nif exist x (echo one\n")
    out = subprocess.run([*_blinter(), "bad.bat", "--config", str(REPO / "blinter.ini"), "--fail-on", "style"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
