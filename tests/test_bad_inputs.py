"""The bad-input corpus (tests/data/bad/<case>/case.json), each case run through the real command line.

A case says which script to run and what must happen:
  expect "error": exit status 2, exactly one non-empty stderr line matching `match`, no traceback, and no
                  output left under {out} (temp files, half-written datasets) apart from `allow` globs;
  expect "skip":  exit status 0 and a rejects file (`rejects.file`) with `rejects.count` records whose
                  reasons all match `match`.
Placeholders in `command` and `setup`: {case} the case folder, {out} a fresh output folder, {work} a
fresh scratch folder for `setup`, {data} the tiny converted dataset, {model} the tiny checkpoint-best,
{task} the tiny task CSV, {patients} the tiny patients JSON (session fixtures from conftest.py).
`setup` steps run first: {"copy": src, "to": dst}, {"truncate": path, "bytes": n},
{"append": path, "text": s}, {"delete": path or glob}, {"write": path, "text": s}.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, SCRIPTS, script_env

CORPUS = REPO / "tests" / "data" / "bad"
CASES = sorted(p.parent.name for p in CORPUS.glob("*/case.json"))
TIMEOUT_S = 180  # per case; a hang fails the case instead of the suite
WORKERS = 4  # concurrent cases: each is mostly interpreter and torch start-up
FIXTURES = {"data": "tiny_data", "model": "tiny_model", "task": "tiny_cohort", "patients": "tiny_cohort"}
# Files a failed run may leave in {out}: logs are a record of the failure, not an output.
ALWAYS_ALLOWED = ("*.log", "**/*.log")


def load_case(name: str) -> dict:
    case = json.loads((CORPUS / name / "case.json").read_text(encoding="utf-8"))
    assert case["expect"] in ("error", "skip"), f"{name}: expect must be 'error' or 'skip'"
    assert Path(case["command"][0]).name == case["command"][0] and (SCRIPTS / case["command"][0]).is_file(), \
        f"{name}: {case['command'][0]} is not a script in scripts/"
    return case


def placeholders(case: dict, name: str, tmp_path: Path, request) -> dict[str, str]:
    """Values for every placeholder the case uses; session fixtures are built only when needed."""
    text = json.dumps(case)
    values = {"case": CORPUS / name, "out": tmp_path / "out", "work": tmp_path / "work"}
    for key, fixture in FIXTURES.items():
        if "{" + key + "}" in text:
            value = request.getfixturevalue(fixture)
            values[key] = value[key] if isinstance(value, dict) else value
    (tmp_path / "work").mkdir()
    return {k: str(v) for k, v in values.items()}


def fill(s: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        s = s.replace("{" + k + "}", v)
    return s


def run_setup(steps: list[dict], values: dict[str, str]) -> None:
    for step in steps:
        if "copy" in step:
            src, dst = Path(fill(step["copy"], values)), Path(fill(step["to"], values))
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
        elif "truncate" in step:
            path = Path(fill(step["truncate"], values))
            path.write_bytes(path.read_bytes()[: step["bytes"]])
        elif "append" in step:
            with open(fill(step["append"], values), "a", encoding="utf-8") as f:
                f.write(step["text"])
        elif "write" in step:
            path = Path(fill(step["write"], values))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(step["text"], encoding="utf-8")
        elif "delete" in step:  # a path or a glob
            path = Path(fill(step["delete"], values))
            for p in path.parent.glob(path.name):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        else:
            raise AssertionError(f"unknown setup step {step}")


def read_reasons(path: Path) -> list[str]:
    """Reasons from a rejects file: JSONL records with "reason", or a CSV with a reason column."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return [row["reason"] for row in csv.DictReader(text.splitlines())]
    return [json.loads(line)["reason"] for line in text.splitlines() if line.strip()]


def left_outputs(out: Path, allow: list[str]) -> list[str]:
    """Files under {out} that a failed run should not have left behind."""
    if not out.exists():
        return []
    allowed = {p for pattern in [*ALWAYS_ALLOWED, *allow] for p in out.glob(pattern)}
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p not in allowed)


class Corpus:
    """Runs the selected cases concurrently (subprocess start-up dominates, so a pool keeps the corpus
    fast); each test then waits for its own case. Cases needing a session fixture start once it is built."""

    def __init__(self, names: list[str], request, tmp_factory):
        self.pool = ThreadPoolExecutor(max_workers=WORKERS)
        self.runs: dict[str, Future] = {}
        cases = {n: load_case(n) for n in names}
        stages = [[], ["data", "task", "patients"], ["model"]]  # the fixtures each stage may need, cheapest first
        for i, allowed in enumerate(stages):
            for name, case in cases.items():
                needs = {k for k in FIXTURES if "{" + k + "}" in json.dumps(case)}
                if needs <= set(x for s in stages[: i + 1] for x in s) and name not in self.runs:
                    tmp = tmp_factory.mktemp(name[:30])
                    self.runs[name] = self.pool.submit(run_case, name, case, placeholders(case, name, tmp, request), tmp)

    def result(self, name: str):
        return self.runs[name].result()


def run_case(name: str, case: dict, values: dict[str, str], tmp: Path):
    """Set up and run one case; returns (values, argv, finished process or None on timeout, repo files the
    run added to the case folder)."""
    run_setup(case.get("setup", []), values)
    case_files = {q for q in (CORPUS / name).rglob("*")}
    argv = [fill(a, values) for a in case["command"]]
    cwd = tmp / "cwd"
    cwd.mkdir()
    try:
        p = subprocess.run([sys.executable, str(SCRIPTS / argv[0]), *argv[1:]], cwd=cwd, env=script_env(),
                           capture_output=True, text=True, timeout=case.get("timeout", TIMEOUT_S),
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        p = None
    return values, argv, p, sorted(str(q) for q in set((CORPUS / name).rglob("*")) - case_files)


@pytest.fixture(scope="session")
def corpus(request, tmp_path_factory) -> Corpus:
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_bad_input"]
    c = Corpus(selected, request, tmp_path_factory)
    yield c
    c.pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", CASES)
def test_bad_input(name, corpus):
    case = load_case(name)
    values, argv, p, added = corpus.result(name)
    if p is None:
        pytest.fail(f"{name}: hung (no exit within {case.get('timeout', TIMEOUT_S)} s): {' '.join(argv)}")
    shown = f"{name}: {' '.join(argv)}\n--- exit {p.returncode}\n--- stderr:\n{p.stderr[-3000:]}\n--- stdout:\n{p.stdout[-1500:]}"
    assert "Traceback" not in p.stderr + p.stdout, f"traceback\n{shown}"
    # writes stay inside the folders named on the command line: not the cwd, not the input's folder
    cwd = Path(values["out"]).parent / "cwd"
    assert not list(cwd.rglob("*")), f"wrote into the working directory: {list(cwd.rglob('*'))}\n{shown}"
    assert not added, f"wrote into the input's folder: {added}\n{shown}"

    if case["expect"] == "error":
        assert p.returncode == 2, f"expected exit status 2\n{shown}"
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}\n{shown}"
        assert re.search(case["match"], lines[0], re.IGNORECASE), f"stderr does not match {case['match']!r}\n{shown}"
        left = left_outputs(Path(values["out"]), case.get("allow", []))
        assert not left, f"a failed run left output files {left}\n{shown}"
    else:
        assert p.returncode == 0, f"expected exit status 0 (bad records skipped)\n{shown}"
        rejects = Path(fill(case["rejects"]["file"], values))
        assert rejects.is_file(), f"no rejects file {rejects}\n{shown}"
        reasons = read_reasons(rejects)
        assert len(reasons) == case["rejects"]["count"], f"rejects: {reasons}\n{shown}"
        for reason in reasons:
            assert re.search(case["match"], reason, re.IGNORECASE), f"reject reason {reason!r} !~ {case['match']!r}"
        assert not list(Path(values["out"]).rglob("*.tmp")), f"temp files left\n{shown}"


def test_corpus_size():
    """The corpus covers the issue's list: at least 30 cases."""
    assert len(CASES) >= 30, CASES
