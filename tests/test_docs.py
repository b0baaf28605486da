"""Every command README.md and docs/TRAINING_GUIDE.md show must work: the script exists, every flag is
one its Args accepts (with valid values), launcher flags parse, yaml snippets hold only known keys; the
cheap commands (generate, convert, inspect, baselines) run for real, scaled down, in document order."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from exmed_bert.config import load_yaml, parse_args
from exmed_bert.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "docs" / "TRAINING_GUIDE.md"]
# main() names of a module that parses two dataclasses: which one each parses
ARGS_CLASS = {"main_rf": "RFArgs", "main_xgboost": "XGBArgs"}
MODULES = {"exmed_bert.pipeline": "exmed_bert.pipeline", "exmed_bert.cli.wizard": "exmed_bert.cli.wizard"}
# Scaled-down settings appended when a command runs for real (a later flag wins).
CHEAP = {
    "generate_synthetic_patients.py": ["--num-patients", "60"],
    "convert_synthetic_to_dataset.py": [],
    "example_load_synthetic_data.py": [],
    "train-rf.py": ["--n-estimators", "10", "--n-bootstrap", "20", "--n-jobs", "1"],
    "train-xgboost.py": ["--n-estimators", "10", "--n-bootstrap", "20", "--n-jobs", "1"],
}


# Flags of other tools the docs show: pip, tensorboard, mlflow.
OTHER_TOOLS_FLAGS = {"--index-url", "--logdir", "--host", "--port", "--backend-store-uri", "--artifacts-destination"}


@dataclass
class Command:
    where: str         # "docs/TRAINING_GUIDE.md:123"
    target: str        # "scripts/train-rf.py", "exmed_bert.pipeline" or "--fragment" (pretraining flags)
    argv: list[str]
    launcher: list[str]  # ["torchrun", "--nproc_per_node", "4"] or []

    @property
    def script(self) -> str:
        return self.target.removeprefix("scripts/")


# ---------------------------------------------------------------------------------------------
# extraction


def _logical_lines(block: str, first_line: int):
    """(line number, text) with backslash continuations joined and trailing `# comments` dropped."""
    buf, start = "", None
    for i, raw in enumerate(block.split("\n")):
        start = first_line + i if start is None else start
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        text = re.sub(r"\s+#.*$", "", buf + line).strip()
        if text:
            yield start, text
        buf, start = "", None


def _command(text: str, where: str) -> Command | None:
    if text.startswith("#"):
        return None
    try:
        tokens = [t for t in shlex.split(text) if t != "..."]
    except ValueError:
        return None
    for i, tok in enumerate(tokens):
        if tok.startswith("scripts/") and tok.endswith(".py") and (i == 1 and tokens[0] == "python" or
                                                                   tokens[0] in ("torchrun", "accelerate")):
            return Command(where, tok, tokens[i + 1:], tokens[:i] if tokens[0] != "python" else [])
    if tokens[:2] == ["python", "-m"] and len(tokens) > 2 and tokens[2] in MODULES:
        return Command(where, tokens[2], tokens[3:], [])
    if tokens and tokens[0] in ("./train.sh", r".\train.bat") and len(tokens) > 1:  # extra flags go to the pipeline
        return Command(where, "exmed_bert.pipeline", ["--config", "config.yaml", *tokens[1:]], [])
    return None


def extract(path: Path) -> tuple[list[Command], list[tuple[str, str]]]:
    """The commands shown in `path` (fenced blocks and inline code), and its yaml blocks (where, text)."""
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(REPO).as_posix()
    commands, yamls = [], []
    fenced = list(re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M))
    for m in fenced:
        first = text.count("\n", 0, m.start(2)) + 1
        if m.group(1) == "yaml":
            yamls.append((f"{rel}:{first}", m.group(2)))
            continue
        if m.group(1) not in ("bash", "sh", ""):
            continue
        lines = list(_logical_lines(m.group(2), first))
        for n, line in lines:
            cmd = _command(line, f"{rel}:{n}")
            if cmd:
                commands.append(cmd)
        # a bash block of bare flags (`--plos  # ...`) shows pretraining flags; each line is checked
        # alone, since a repeated flag (`--initialization xavier`, then `kaiming`) keeps only its last value
        if m.group(1) == "bash" and lines and all(line.startswith("--") for _, line in lines):
            commands += [Command(f"{rel}:{n}", "--fragment", shlex.split(line), []) for n, line in lines]
    outside = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
    for m in re.finditer(r"`([^`\n]+)`", outside):
        cmd = _command(m.group(1), f"{rel}:{outside.count(chr(10), 0, m.start()) + 1}")
        if cmd:
            commands.append(cmd)
    commands.sort(key=lambda c: int(c.where.rsplit(":", 1)[1]))  # document order
    return commands, yamls


def parsed_class(module_name: str, main_name: str = "main"):
    """The typed arguments that `module_name`'s `main_name` parses: the `*Args` dataclass the module defines,
    else the one it imports, or the one ARGS_CLASS names."""
    import dataclasses
    import importlib

    module = importlib.import_module(module_name)
    if main_name in ARGS_CLASS:
        return getattr(module, ARGS_CLASS[main_name])
    found = [v for k, v in vars(module).items() if k.endswith("Args") and dataclasses.is_dataclass(v)]
    own = [c for c in found if c.__module__ == module_name]
    found = own or found
    if not found:   # imported inside main (a command line kept light to import): the class its source names
        import inspect

        found = [getattr(importlib.import_module(m), name) for m, name in
                 re.findall(r"from (exmed_bert[\w.]*) import (\w+Args)\b", inspect.getsource(module))]
    assert len(found) == 1, f"{module_name}: expected one *Args dataclass, found {sorted(c.__name__ for c in found)}"
    return found[0]


def args_class(cmd: Command):
    if cmd.target == "--fragment":
        from exmed_bert.training.args import PretrainArgs
        return PretrainArgs
    if cmd.target in MODULES:
        return parsed_class(MODULES[cmd.target])
    script = REPO / cmd.target
    if not script.is_file():
        raise AssertionError(f"{cmd.where}: {cmd.target} does not exist")
    m = re.search(r"from (exmed_bert\.cli\.\w+) import (\w+)", script.read_text())
    assert m, f"{script}: not a thin wrapper around exmed_bert.cli"
    return parsed_class(m.group(1), m.group(2))


def check(cmd: Command) -> str | None:
    """None when the command's flags parse and validate; else the one-line reason."""
    try:
        cls = args_class(cmd)
    except AssertionError as e:
        return str(e)
    argv = list(cmd.argv)
    if cmd.script == "compare-models.py":
        from exmed_bert.cli.compare import _split_runs
        argv = _split_runs(argv)
    try:
        parse_args(cls, argv, prog=cmd.script)
    except SystemExit as e:
        return f"{cmd.where}: {cmd.target} {shlex.join(cmd.argv)}: argparse exit {e.code}"
    except UserError as e:
        return f"{cmd.where}: {cmd.target} {shlex.join(cmd.argv)}: {e}"
    if cmd.launcher:
        return check_launcher(cmd)
    return None


def check_launcher(cmd: Command) -> str | None:
    if cmd.launcher[0] == "torchrun":
        from torch.distributed.run import get_args_parser
        parser, launcher_argv = get_args_parser(), cmd.launcher[1:]
    else:
        from accelerate.commands.launch import launch_command_parser
        parser, launcher_argv = launch_command_parser(), cmd.launcher[2:]
    try:
        parser.parse_args([*launcher_argv, cmd.target])
    except SystemExit as e:
        return f"{cmd.where}: {shlex.join(cmd.launcher)}: launcher flags rejected (exit {e.code})"
    return None


ALL = [(c, doc) for doc in DOCS for c in extract(doc)[0]]


# ---------------------------------------------------------------------------------------------
# tests


def test_docs_show_the_guides_commands():
    guide = [c for c, doc in ALL if doc.name == "TRAINING_GUIDE.md"]
    shown = {c.script for c in guide}
    for script in ("generate_synthetic_patients.py", "convert_synthetic_to_dataset.py", "pretrain-exmed-bert.py",
                   "pretrain-exmed-bert-clinvec.py", "finetune-exmed-bert.py", "train-rf.py", "train-xgboost.py",
                   "compare-models.py", "exmed_bert.pipeline", "--fragment"):
        assert script in shown, f"TRAINING_GUIDE.md shows no command for {script}"
    assert any(c.launcher[:1] == ["torchrun"] for c in guide) and any(c.launcher[:1] == ["accelerate"] for c in guide)
    assert len(guide) >= 25


@pytest.mark.parametrize("cmd", [c for c, _ in ALL], ids=lambda c: c.where)
def test_every_documented_flag_is_accepted(cmd, monkeypatch):
    monkeypatch.chdir(REPO)  # `--config config.yaml` means the repository's config
    assert check(cmd) is None, check(cmd)


def test_the_checker_rejects_a_flag_the_code_lacks(tmp_path):
    doc = REPO / "docs" / "_doc_under_test.md"  # extract() names lines relative to the repository
    doc.write_text("```bash\npython scripts/train-rf.py \\\n    --n-trees 10\n```\n"
                   "```bash\ntorchrun --nproc-per-gpu 2 scripts/pretrain-exmed-bert.py --model-size huge\n```\n"
                   "Run `python scripts/no-such-script.py --x 1`.\n")
    try:
        cmds, _ = extract(doc)
    finally:
        doc.unlink()
    assert [c.where for c in cmds] == ["docs/_doc_under_test.md:2", "docs/_doc_under_test.md:6",
                                       "docs/_doc_under_test.md:8"]
    reasons = [check(c) for c in cmds]
    assert "argparse exit 2" in reasons[0]                      # --n-trees is not a train-rf.py flag
    assert "must be one of" in reasons[1]                       # --model-size huge
    assert "does not exist" in reasons[2]
    cmds[1].argv = ["--model-size", "tiny"]
    assert "launcher flags rejected" in check(cmds[1])           # torchrun has no --nproc-per-gpu


@pytest.mark.parametrize("where,text", [y for doc in DOCS for y in extract(doc)[1]], ids=lambda v: str(v)[:40])
def test_yaml_snippets_hold_only_known_keys(where, text, tmp_path):
    path = tmp_path / "snippet.yaml"
    path.write_text(text)
    load_yaml(path)  # raises UserError naming an unknown key or section


def test_cheap_guide_commands_run_in_document_order(tmp_path, monkeypatch, capsys):
    """The guide's generate / convert / inspect / baseline commands, scaled down, in a fresh folder."""
    import importlib

    monkeypatch.chdir(tmp_path)
    seen, ran = set(), []
    for cmd, doc in ALL:
        if doc.name != "TRAINING_GUIDE.md" or cmd.script not in CHEAP or cmd.launcher:
            continue
        argv = [*cmd.argv, *CHEAP[cmd.script]]
        if (cmd.script, tuple(argv)) in seen:
            continue
        seen.add((cmd.script, tuple(argv)))
        m = re.search(r"from (exmed_bert\.cli\.\w+) import (\w+)", (REPO / cmd.target).read_text())
        main = getattr(importlib.import_module(m.group(1)), m.group(2))
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 0, f"{cmd.where}: python {cmd.target} {shlex.join(argv)} -> exit {rc}\n{err[-2000:]}"
        ran.append(cmd.script)
    assert {"generate_synthetic_patients.py", "convert_synthetic_to_dataset.py", "train-rf.py",
            "train-xgboost.py"} <= set(ran)
    for path in ("data/synthetic_patients.json", "data/task_specific.csv", "pretrain_stuff/synthetic_train.pt",
                 "pretrain_stuff/vocab.json", "output/rf/metrics.json", "output/xgboost/metrics.json"):
        assert (tmp_path / path).is_file(), path


def known_flags() -> set[str]:
    """Every option string of the project's commands and of the two launchers."""
    from exmed_bert.config import build_parser

    classes = [parsed_class(m) for m in MODULES.values()]
    for script in sorted((REPO / "scripts").glob("*.py")):
        m = re.search(r"from (exmed_bert\.cli\.\w+) import (\w+)", script.read_text())
        if m:
            classes.append(parsed_class(m.group(1), m.group(2)))
    flags = {o for cls in classes for a in build_parser(cls)._actions for o in a.option_strings}
    from accelerate.commands.launch import launch_command_parser
    from torch.distributed.run import get_args_parser

    for parser in (get_args_parser(), launch_command_parser()):
        flags |= {o for a in parser._actions for o in a.option_strings}
    return flags


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_flag_mentioned_anywhere_exists(doc):
    """Flags named in prose and tables too (`--freeze-clinvec-steps N`), not only in full commands."""
    text = doc.read_text(encoding="utf-8")
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", text))
    unknown = sorted(mentioned - known_flags() - OTHER_TOOLS_FLAGS)
    assert not unknown, f"{doc.name} mentions flags no command accepts: {unknown}"
