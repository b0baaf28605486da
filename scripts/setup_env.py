"""Create .venv when missing and install the project into it; print the venv's Python path.

Standard library only, so it runs on a bare Python 3.10+. The launchers (train.sh, train.bat,
run_tests.sh, ...) call it first; it reinstalls only when requirements or pyproject.toml changed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements_hash(dev: bool) -> str:
    h = hashlib.sha256(b"dev" if dev else b"run")
    for name in ("pyproject.toml", "requirements.txt", "requirements-dev.txt"):
        p = ROOT / name
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dev", action="store_true", help="also install the test tools")
    args = ap.parse_args(argv)
    if sys.version_info < (3, 10):
        print(f"error: Python 3.10 or newer is needed; this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    if not venv_python().exists():
        print(f"Creating {VENV} ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".exmed-installed"
    wanted = requirements_hash(args.dev)
    have = stamp.read_text().split() if stamp.exists() else []
    if wanted not in have and not (not args.dev and requirements_hash(True) in have):
        target = ".[dev]" if args.dev else "."
        print(f"Installing exmed-bert{'[dev]' if args.dev else ''} and its requirements into .venv "
              "(first run takes a few minutes) ...", file=sys.stderr)
        cmd = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-e", target]
        # pip's progress goes to stderr so that stdout carries only the interpreter path
        rc = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr).returncode
        if rc != 0:
            print("error: installing the requirements failed (see pip's message above)", file=sys.stderr)
            return rc
        stamp.write_text(wanted + "\n")
    print(venv_python())
    return 0


if __name__ == "__main__":
    sys.exit(main())
