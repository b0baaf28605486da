"""The baselines' registry: every entry builds, fits and explains itself; the stage names live only there
(the pipeline, config.yaml's sections, the report and the commands read them from it); importing it stays
light."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from test_baselines import quick_args, synthetic_splits

from exmed_bert.baselines import registry
from exmed_bert.baselines.args import BaselineArgs, RFArgs, XGBArgs
from exmed_bert.baselines.features import featurize, labels_of
from exmed_bert.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_FILES = {ROOT / "exmed_bert/baselines/registry.py", ROOT / "exmed_bert/baselines/args.py"}
# the same word meaning something else: (file, literal) -> what it is
NOT_A_BASELINE = {("exmed_bert/io.py", "xgboost"): "the xgboost package, whose version run_config.json records"}


@pytest.mark.parametrize("name", registry.NAMES)
def test_every_entry_fits_a_planted_signal_and_explains_it(name):
    baseline = registry.get(name)
    splits = synthetic_splits(n=300, seed=5)          # code 9 in 90% of positives, 10% of negatives
    V = 40
    X = featurize(splits["train"], V, "counts")       # (300, V + 3)
    model = baseline.build(quick_args(name, "unused"), None).fit(X, labels_of(splits["train"]))
    X_test, y_test = featurize(splits["test"], V, "counts"), labels_of(splits["test"])
    p = model.predict_proba(X_test)[:, 1]
    # the planted rule "has code 9" is what a model that found the code reaches (0.87 on these 100 test
    # patients; the noise codes give a model nothing more, and fitting them costs a little: RF, XGBoost
    # and logistic regression (C 0.03-1) land at 0.82-0.84). A model blind to the code scores about 0.5.
    rule = roc_auc_score(y_test, X_test[:, 9].toarray().ravel() > 0)
    assert rule > 0.8 and roc_auc_score(y_test, p) > rule - 0.08
    assert baseline.importances is not None and baseline.importance_kind
    imp = baseline.importances(model)
    assert imp.shape == (V + 3,) and np.all(imp >= 0)
    assert int(np.argmax(imp)) == 9                  # the planted code explains the most


def test_entries_are_complete_and_names_unique():
    assert len(set(registry.NAMES)) == len(registry.BASELINES) >= 2
    for b in registry.BASELINES:
        assert issubclass(b.args, BaselineArgs) and registry.for_class(b.args) is b
        assert b.script == f"train-{b.name}.py" and (ROOT / "scripts" / b.script).is_file()
        assert set(b.features) == {"counts", "windows", "windows_order"}  # every baseline takes every feature set
        # the script is the guide's three lines around this baseline's own main
        assert f"import main_{b.name}\n" in (ROOT / "scripts" / b.script).read_text()
    with pytest.raises(UserError, match="unknown baseline 'svm'"):
        registry.get("svm")


def test_tree_settings_keep_their_flags_and_defaults():
    rf, xgb = RFArgs(), XGBArgs()
    assert (rf.n_estimators, rf.max_depth, rf.n_jobs) == (500, None, -1)
    assert (rf.min_samples_leaf, rf.max_features) == (5, "sqrt")
    assert (xgb.n_estimators, xgb.max_depth, xgb.learning_rate, xgb.subsample) == (300, 3, 0.05, 0.8)
    assert rf.output_dir == "output/rf" and xgb.output_dir == "output/xgboost"
    assert "n_estimators" not in BaselineArgs.__dataclass_fields__  # tree-only settings sit on the tree classes
    with pytest.raises(UserError, match="--n-estimators must be at least 1"):
        RFArgs(n_estimators=0).validate()
    assert RFArgs(n_estimators=7).estimator_params() == {
        "n_estimators": 7, "max_depth": None, "n_jobs": -1, "min_samples_leaf": 5, "max_features": "sqrt"}


def test_pipeline_stages_sections_and_runners_come_from_the_registry():
    from exmed_bert import pipeline
    from exmed_bert.config import load_yaml
    from exmed_bert.stages import REGISTRY, STAGES

    names = list(registry.NAMES)
    assert list(STAGES[STAGES.index("finetune") + 1:STAGES.index("report")]) == names
    assert [n for n, _ in REGISTRY if n in names] == names
    assert {n: c for n, c in REGISTRY if n in names} == {b.name: b.args for b in registry.BASELINES}
    sections = load_yaml(ROOT / "config.yaml")
    p = pipeline.parse_args(pipeline.PipelineArgs, ["--stages", ",".join(STAGES)], sections=sections)
    planned = {s.name: s for s in pipeline.plan(p, sections)[0]}
    for b in registry.BASELINES:
        stage = planned[b.name]
        assert type(stage.args) is b.args and stage.script == b.script
        assert stage.args.output_dir == str(Path(p.output_root) / b.name)
    assert [str(Path(p.output_root) / b.name) for b in registry.BASELINES] == planned["report"].args.runs[1:]


def _string_constants(path: Path):
    """(line, text) of every string literal in a module except docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def spelled_names(files) -> list[str]:
    """Where a string literal names a baseline: the name itself, its script or its default output folder."""
    hits = []
    for path in files:
        for line, text in sorted(_string_constants(path)):
            for name in registry.NAMES:
                where = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
                if (where, text) in NOT_A_BASELINE:
                    continue
                if text == name or re.search(rf"(train-{re.escape(name)}\.py|output/{re.escape(name)})\b", text):
                    hits.append(f"{where}:{line}: {text!r}")
    return hits


def test_no_module_outside_the_registry_spells_a_baseline_name(tmp_path):
    files = sorted(set((ROOT / "exmed_bert").rglob("*.py")) - REGISTRY_FILES)
    hits = spelled_names(files)
    assert not hits, "baseline names belong to baselines/registry.py:\n" + "\n".join(hits)
    # the check sees a literal, a script name and a folder, and passes over docstrings and other words
    planted = tmp_path / "planted.py"
    name = registry.NAMES[0]
    planted.write_text(f'"""{name} in a docstring is prose."""\nA = "{name}"\nB = ["output/{name}"]\n'
                       f'C = "python scripts/train-{name}.py"\nD = "{name}x"\n')
    found = [h.split(": ", 1)[1] for h in spelled_names([planted])]
    assert found == [repr(name), repr(f"output/{name}"), repr(f"python scripts/train-{name}.py")]


def test_reading_the_settings_imports_neither_sklearn_nor_xgboost():
    code = ("import sys, exmed_bert.stages, exmed_bert.baselines.registry, exmed_bert.cli.baselines; "
            "print(sorted(m for m in ('sklearn', 'xgboost', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
