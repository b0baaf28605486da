"""Every command the docs and examples show must work: the script exists, every flag is one its Args
accepts (with valid values; a benchmark's flag one its parser declares), launcher flags parse, yaml snippets
hold only known keys, and every script a user runs is shown in README.md or docs/TRAINING_GUIDE.md. The
guide's cheap commands (generate, convert, inspect, baselines) run for real, scaled down, in document order."""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from exmed_bert.baselines.registry import BASELINES
from exmed_bert.config import load_yaml, parse_args
from exmed_bert.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "docs" / "TRAINING_GUIDE.md"]  # the guides: their commands run, every script is in one
# Every doc and example whose commands and flags are checked against the code.
CHECKED = DOCS + sorted({*(REPO / "docs").glob("*.md"), *(REPO / "examples").glob("*.md"),
                         *(REPO / "examples").glob("*.sh")} - set(DOCS))
# Scripts a user does not run, and why: they need not appear in the guides.
NOT_RUN_BY_USERS = {
    "setup_env.py": "the launchers (train.sh, run_tests.sh, ...) run it to build .venv",
    "build_code_tables.py": "maintainers rebuild the shipped code tables with it (docs/CODE_SYSTEMS.md)",
}
# How a command names the Python interpreter: in the docs, and in the example scripts (PY=${PYTHON:-python}).
PYTHONS = ("python", "python3", "$PY", "${PY}")
# main() names of a module that parses several dataclasses (cli.baselines: one per baseline): which one each parses
ARGS_CLASS = {f"main_{b.name}": b.args.__name__ for b in BASELINES}
MODULES = {"exmed_bert.pipeline": "exmed_bert.pipeline", "exmed_bert.cli.wizard": "exmed_bert.cli.wizard"}
# Scaled-down settings appended when a command runs for real (a later flag wins).
CHEAP = {
    "generate_synthetic_patients.py": ["--num-patients", "60"],
    "convert_synthetic_to_dataset.py": [],
    "example_load_synthetic_data.py": [],
    "train-rf.py": ["--n-estimators", "10", "--n-bootstrap", "20", "--n-jobs", "1"],
    "train-xgboost.py": ["--n-estimators", "10", "--n-bootstrap", "20", "--n-jobs", "1"],
}


# Flags of other tools the docs show: pip, tensorboard, mlflow, meds_reader_convert.
OTHER_TOOLS_FLAGS = {"--index-url", "--logdir", "--host", "--port", "--backend-store-uri", "--artifacts-destination",
                     "--num_threads", "--no-deps"}


@dataclass
class Command:
    where: str         # "docs/TRAINING_GUIDE.md:123"
    target: str        # "scripts/train-rf.py", "benchmarks/throughput.py", "exmed_bert.pipeline" or "--fragment"
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


def _shell_words(tokens: list[str]) -> list[str]:
    """Words as the command would see them: "$REPO/scripts/x.py" is scripts/x.py, "${N:-160}" its default,
    an optional part written `[--seed 0]` is shown, and a bare "$COMMON" (flags kept in a variable) is left
    out where it stands for flags, not for a flag's value."""
    words = []
    for tok in tokens:
        tok = re.sub(r"^\$\{?REPO\}?/", "", tok)
        tok = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", tok)
        if tok.startswith("[-"):
            tok = tok[1:]
        if tok.endswith("]") and "[" not in tok:
            tok = tok[:-1]
        if tok not in PYTHONS and re.fullmatch(r"\$\{?\w+(\[@\])?\}?", tok) and not (words and words[-1].startswith("-")):
            continue
        words.append(tok)
    return words


def _command(text: str, where: str) -> Command | None:
    if text.startswith("#"):
        return None
    try:
        tokens = [t for t in shlex.split(text) if t != "..."]
    except ValueError:
        return None
    tokens = _shell_words(tokens)
    for i, tok in enumerate(tokens):
        if tok.startswith("scripts/") and tok.endswith(".py") and (i == 1 and tokens[0] in PYTHONS or
                                                                   tokens[0] in ("torchrun", "accelerate")):
            return Command(where, tok, tokens[i + 1:], tokens[:i] if tokens[0] not in PYTHONS else [])
        if tok.startswith(("benchmarks/", "examples/")) and i == 1 and (
                tokens[0] in PYTHONS and tok.endswith(".py") or tokens[0] == "bash" and tok.endswith(".sh")):
            return Command(where, tok, tokens[i + 1:], [])
    if tokens[:2] == ["python", "-m"] and len(tokens) > 2 and tokens[2] in MODULES:
        return Command(where, tokens[2], tokens[3:], [])
    if tokens and tokens[0] in ("./train.sh", r".\train.bat") and len(tokens) > 1:  # extra flags go to the pipeline
        return Command(where, "exmed_bert.pipeline", ["--config", "config.yaml", *tokens[1:]], [])
    return None


def extract(path: Path) -> tuple[list[Command], list[tuple[str, str]]]:
    """The commands shown in `path` (fenced blocks and inline code; a shell script's lines), and its yaml
    blocks (where, text)."""
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(REPO).as_posix()
    commands, yamls = [], []
    if path.suffix == ".sh":  # a script is one bash block, less its here-documents (another language's text)
        text = re.sub(r"<<-?\s*'?(\w+)'?\n.*?^\1$", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
        commands = [c for n, line in _logical_lines(text, 1) if (c := _command(line, f"{rel}:{n}"))]
        return commands, yamls
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


def example_class(path: Path):
    """The `*Args` dataclass an example script (examples/*.py, not a package) defines and parses."""
    import dataclasses
    import importlib.util
    import sys

    name = f"_doc_example_{path.stem}"
    if name not in sys.modules:  # dataclasses look their module up in sys.modules
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    module = sys.modules[name]
    found = [v for k, v in vars(module).items() if k.endswith("Args") and dataclasses.is_dataclass(v)
             and v.__module__ == module.__name__]
    assert len(found) == 1, f"{path.name}: expected one *Args dataclass, found {[c.__name__ for c in found]}"
    return found[0]


def args_class(cmd: Command):
    """The dataclass the command parses, or None for a script with its own argparse (benchmarks, maintainer
    scripts): `declared_flags` checks those."""
    if cmd.target == "--fragment":
        from exmed_bert.training.args import PretrainArgs
        return PretrainArgs
    if cmd.target in MODULES:
        return parsed_class(MODULES[cmd.target])
    script = REPO / cmd.target
    if not script.is_file():
        raise AssertionError(f"{cmd.where}: {cmd.target} does not exist")
    if script.suffix == ".sh":  # a shell script: that it exists is all there is to check
        return None
    if cmd.target.startswith("examples/"):
        return example_class(script)
    if cmd.target.startswith("benchmarks/"):   # its own argparse, even where it calls a command's main inside
        return None
    m = re.search(r"from (exmed_bert\.cli\.\w+) import (\w+)", script.read_text())
    if m is None and declared_flags(script):
        return None
    assert m, f"{script}: not a thin wrapper around exmed_bert.cli"
    return parsed_class(m.group(1), m.group(2))


def declared_flags(path: Path) -> set[str]:
    """The options a script with its own argparse declares (`ap.add_argument("--steps", ...)`), read from its
    source: importing a benchmark would import torch and its heavier tools for nothing."""
    return set(re.findall(r"add_argument\(\s*[\"'](--[\w-]+)", path.read_text(encoding="utf-8")))


def check_declared(cmd: Command) -> str | None:
    script = REPO / cmd.target
    if script.suffix == ".py":  # a shell script reads no flags
        unknown = sorted({a.split("=")[0] for a in cmd.argv if a.startswith("--")} - declared_flags(script))
        if unknown:
            return f"{cmd.where}: {cmd.target} declares no {', '.join(unknown)}"
    return None


def check(cmd: Command) -> str | None:
    """None when the command's flags parse and validate; else the one-line reason."""
    try:
        cls = args_class(cmd)
    except AssertionError as e:
        return str(e)
    if cls is None:
        return check_declared(cmd)
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


ALL = [(c, doc) for doc in CHECKED for c in extract(doc)[0]]


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


@pytest.mark.parametrize("where,text", [y for doc in CHECKED for y in extract(doc)[1]], ids=lambda v: str(v)[:40])
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


@functools.cache
def known_flags() -> set[str]:
    """Every option string of the project's commands, its benchmarks and the two launchers."""
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
    for script in (*(REPO / "benchmarks").glob("*.py"), *(REPO / "scripts").glob("*.py")):
        flags |= declared_flags(script)
    for example in (REPO / "examples").glob("*.py"):
        flags |= {o for a in build_parser(example_class(example))._actions for o in a.option_strings}
    return flags


@pytest.mark.parametrize("doc", CHECKED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_flag_mentioned_anywhere_exists(doc):
    """Flags named in prose and tables too (`--freeze-clinvec-steps N`), not only in full commands."""
    text = doc.read_text(encoding="utf-8")
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", text))
    unknown = sorted(mentioned - known_flags() - OTHER_TOOLS_FLAGS)
    assert not unknown, f"{doc.relative_to(REPO).as_posix()} mentions flags no command accepts: {unknown}"


def test_every_script_a_user_runs_is_in_the_guides():
    shown = {c.script for c, doc in ALL if doc in DOCS}
    scripts = {p.name for p in (REPO / "scripts").glob("*.py")}
    assert set(NOT_RUN_BY_USERS) <= scripts, "NOT_RUN_BY_USERS names a script that is gone"
    missing = sorted(scripts - shown - set(NOT_RUN_BY_USERS))
    assert not missing, f"no command in README.md or docs/TRAINING_GUIDE.md runs {missing}"


def test_every_doc_and_example_is_checked():
    names = {p.relative_to(REPO).as_posix() for p in CHECKED}
    assert {"README.md", "docs/TRAINING_GUIDE.md", "docs/DATASET.md", "docs/PERFORMANCE.md",
            "examples/meds_end_to_end.sh"} <= names
    example = [c for c, doc in ALL if doc.name == "meds_end_to_end.sh"]
    assert {c.script for c in example} >= {"generate_synthetic_patients.py", "convert_synthetic_to_dataset.py",
                                           "pretrain-exmed-bert.py", "finetune-exmed-bert.py", "train-rf.py"}


def test_the_checker_reads_shell_scripts_and_benchmarks(tmp_path):
    script = REPO / "examples" / "_script_under_test.sh"
    script.write_text('PY=${PYTHON:-python}\n"$PY" - <<\'EOF\'\nprint("python scripts/train-rf.py --bogus")\nEOF\n'
                      '"$PY" "$REPO/scripts/train-rf.py" --data-dir d \\\n  --n-trees 5\n'
                      'python benchmarks/throughput.py --device cpu --no-such-flag 3\n'
                      'bash benchmarks/no_such.sh\n')
    try:
        cmds, _ = extract(script)
    finally:
        script.unlink()
    assert [(c.where, c.target) for c in cmds] == [
        ("examples/_script_under_test.sh:5", "scripts/train-rf.py"),   # the here-document's line is not a command
        ("examples/_script_under_test.sh:7", "benchmarks/throughput.py"),
        ("examples/_script_under_test.sh:8", "benchmarks/no_such.sh")]
    reasons = [check(c) for c in cmds]
    assert "argparse exit 2" in reasons[0]                  # --n-trees is not a train-rf.py flag
    assert reasons[1].endswith("declares no --no-such-flag")
    assert "does not exist" in reasons[2]
    cmds[0].argv, cmds[1].argv = ["--n-estimators", "5"], ["--device", "cpu", "--steps", "3"]
    assert check(cmds[0]) is None and check(cmds[1]) is None


def test_the_prose_check_rejects_a_flag_no_command_has(tmp_path, monkeypatch):
    doc = tmp_path / "prose.md"
    doc.write_text("Use `--max-tokens-per-batch N`, or `--presets` of the benchmark, not `--max-tokns`.\n")
    monkeypatch.setattr(Path, "relative_to", lambda self, other: self)
    with pytest.raises(AssertionError, match=r"\['--max-tokns'\]"):
        test_every_flag_mentioned_anywhere_exists(doc)
