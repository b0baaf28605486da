"""Config system: flags, config.yaml (a section per stage, the guide's flat keys), precedence, type conversion
and one-line errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import yaml

from exmed_bert.config import FLAT_KEY_STAGES, convert, from_sections, load_yaml, parse_args, split_sections, to_argv
from exmed_bert.convert.args import ConvertArgs
from exmed_bert.errors import UserError, cli_entry
from exmed_bert.stages import REGISTRY
from exmed_bert.synthetic.args import GenerateArgs

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    num_patients: int = field(default=1000, metadata={"help": "patients", "aliases": ["-n"]})
    learning_rate: float = 1e-4
    code: str = "A"
    use_clinvec: bool = False
    vocab_types: list[str] = field(default_factory=lambda: ["icd10cm"])
    resize_method: str = field(default="auto", metadata={"choices": ["auto", "pca"]})
    seed: Optional[int] = None


def write(tmp_path, text):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def resolve(path) -> dict:
    """Every stage's arguments from one read of `path`."""
    sections = load_yaml(path)
    return {name: from_sections(cls, sections, str(path)) for name, cls in REGISTRY}


def test_defaults_and_flags():
    a = parse_args(Args, ["-n", "5", "--use-clinvec", "--vocab-types", "atc,cpt", "--seed", "3"])
    assert (a.num_patients, a.use_clinvec, a.vocab_types, a.seed) == (5, True, ["atc", "cpt"], 3)
    assert parse_args(Args, []) == Args()


def test_each_section_sets_its_own_stage_only(tmp_path, capsys):
    cfg = write(tmp_path, "generate:\n  seed: 1\nconvert:\n  seed: 2\n  max_length: 64\n"
                          "pretrain:\n  seed: 3\n  learning_rate: 1e-4\nfinetune:\n  learning_rate: 5e-5\n"
                          "rf:\n  seed: 4\nreport:\n  seed: 5\npipeline:\n  output_root: elsewhere\n")
    s = resolve(cfg)
    assert [s[n].seed for n in ("generate", "convert", "pretrain", "finetune", "rf", "xgboost", "report")] == \
        [1, 2, 3, 42, 4, 42, 5]
    assert s["convert"].max_length == 64 and s["finetune"].max_length == 512  # a section reaches no other stage
    # yaml 1.1 reads 1e-4 as a string: the declared type decides
    assert s["pretrain"].learning_rate == pytest.approx(1e-4) and isinstance(s["pretrain"].learning_rate, float)
    assert s["finetune"].learning_rate == pytest.approx(5e-5) and s["pipeline"].output_root == "elsewhere"
    assert capsys.readouterr().err == ""  # nothing set twice, nothing to say


def test_a_flat_key_sets_every_stage_that_has_it_and_says_so_once(tmp_path, capsys):
    cfg = write(tmp_path, "num_patients: 50\nseed: 7\nbatch_size: 4\n")
    s = resolve(cfg)
    assert (s["generate"].seed, s["convert"].seed, s["pretrain"].seed) == (7, 7, 7)
    # finetune, the baselines and the report read only their own sections, as the guide's mappings do
    assert (s["finetune"].seed, s["rf"].seed, s["report"].seed, s["finetune"].batch_size) == (42, 42, 42, 16)
    assert s["generate"].num_patients == 50 and s["pretrain"].batch_size == 4
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{cfg}: 'seed' (top level) sets generate, convert and pretrain; put it under one stage's "
                   "section to set only that one"]  # once per read, not once per stage; one-stage keys say nothing


def test_a_section_key_wins_over_a_flat_key_for_its_stage(tmp_path, capsys):
    cfg = write(tmp_path, "seed: 7\nconvert:\n  seed: 1\nclinvec_params:\n  use_clinvec: true\n"
                          "  clinvec_dir: Elsewhere\n")
    s = resolve(cfg)
    assert (s["generate"].seed, s["convert"].seed, s["pretrain"].seed) == (7, 1, 7)
    assert s["pretrain"].use_clinvec is True and s["generate"].clinvec_dir == s["pretrain"].clinvec_dir == "Elsewhere"
    err = capsys.readouterr().err
    assert "'seed' (top level) sets generate and pretrain;" in err
    assert "'clinvec_dir' (clinvec_params) sets generate and pretrain;" in err
    assert "use_clinvec" not in err
    cfg = write(tmp_path, "seed: 7\ngenerate:\n  seed: 1\nconvert:\n  seed: 2\n")
    assert resolve(cfg)["pretrain"].seed == 7 and "seed" not in capsys.readouterr().err  # one stage left


def test_the_guides_flat_config_still_reads(tmp_path):
    cfg = write(tmp_path, "num_patients: 1000\nnovel_prob: 0.01\nnum_hidden_layers: 2\nhidden_size: 64\n"
                          "batch_size: 2\nnum_epochs: 3\nlearning_rate: 0.0001\nclinvec_params:\n"
                          "  use_clinvec: true\n  clinvec_dir: \"ClinVec\"\n  vocab_types: [\"icd10cm\", \"atc\"]\n"
                          "  use_hierarchical_init: true\nfinetune:\n  num_epochs: 2\nrf:\n  n_estimators: 10\n")
    s = resolve(cfg)
    pre = s["pretrain"]
    assert (pre.num_hidden_layers, pre.hidden_size, pre.batch_size, pre.learning_rate) == (2, 64, 2, 1e-4)
    assert pre.use_clinvec is True and pre.vocab_types == ["icd10cm", "atc"]
    assert (s["finetune"].num_epochs, s["rf"].n_estimators, s["xgboost"].n_estimators) == (2, 10, 300)


def test_the_repo_config_is_its_flat_form_in_sections(capsys):
    """config.yaml's sections hold what the guide's flat layout would: every stage resolves the same."""
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    flat: dict = {}
    for stage in FLAT_KEY_STAGES:
        for key, value in (raw.get(stage) or {}).items():
            assert flat.setdefault(key, value) == value, f"{stage}.{key} differs between stages"
    flat.update({k: v for k, v in raw.items() if k not in FLAT_KEY_STAGES})
    sectioned, _ = split_sections(raw, "config.yaml")
    as_flat, notices = split_sections(flat, "flat.yaml")
    for name, cls in REGISTRY:
        assert from_sections(cls, sectioned) == from_sections(cls, as_flat), name
    assert any("'seed' (top level) sets generate, convert and pretrain" in n for n in notices)
    assert load_yaml(ROOT / "config.yaml") == sectioned and capsys.readouterr().err == ""


def test_unknown_keys_name_the_nearest_valid_one(tmp_path):
    for text, message in [
        ("num_patiens: 50\n", "unknown key 'num_patiens'; did you mean 'num_patients'?"),
        ("n_estimators: 50\n", "unknown key 'n_estimators'; did you mean 'rf.n_estimators'?"),  # a section's key
        ("pretrian:\n  seed: 1\n", "unknown key 'pretrian'; did you mean 'pretrain'?"),
        ("pretrain:\n  learning_rte: 0.1\n", "unknown key 'pretrain.learning_rte'; did you mean 'pretrain.learning_rate'?"),
        ("xgboost:\n  n_estimator: 3\n", "unknown key 'xgboost.n_estimator'; did you mean 'xgboost.n_estimators'?"),
        ("generate:\n  max_length: 64\n", "unknown key 'generate.max_length'"),  # convert's key, not generate's
        ("clinvec_params:\n  use_clinvc: true\n", "unknown key 'clinvec_params.use_clinvc'; did you mean "
                                                   "'clinvec_params.use_clinvec'?"),
        ("finetune: 3\n", "finetune must be a mapping"),
    ]:
        with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'config.yaml'}: {message}")):
            load_yaml(write(tmp_path, text))


def test_values_convert_by_the_declared_type(tmp_path):
    cfg = write(tmp_path, "generate:\n  output: 401\n  start_date: 2021-02-03\nrf:\nreport:\n  runs: a,b\n")
    s = resolve(cfg)  # an empty section (rf:) is no error
    assert s["generate"].output == "401" and s["generate"].start_date == "2021-02-03"  # yaml's int and date
    assert s["report"].runs == ["a", "b"]
    with pytest.raises(UserError, match=r"config.yaml: max_length: expected an integer"):
        resolve(write(tmp_path, "convert:\n  max_length: lots\n"))
    with pytest.raises(UserError, match="resize_method must be one of"):
        resolve(write(tmp_path, "pretrain:\n  resize_method: zoom\n"))


def test_flags_win_over_the_stages_section(tmp_path):
    cfg = write(tmp_path, "seed: 7\ngenerate:\n  num_patients: 50\n  seed: 3\n")
    assert parse_args(GenerateArgs, ["--config", str(cfg)]).seed == 3
    a = parse_args(GenerateArgs, ["--config", str(cfg), "--seed", "9"])
    assert (a.num_patients, a.seed) == (50, 9)
    assert parse_args(ConvertArgs, ["--config", str(cfg)]).seed == 7


def test_the_report_section_also_goes_by_its_scripts_name(tmp_path):
    assert resolve(write(tmp_path, "compare:\n  n_bootstrap: 9\n"))["report"].n_bootstrap == 9


def test_bad_yaml_syntax(tmp_path):
    cfg = write(tmp_path, "a: [1, 2\n")
    with pytest.raises(UserError, match=r"not valid YAML \(line"):
        load_yaml(cfg)


def test_unknown_flag_exits_2_with_hint(capsys):
    @cli_entry
    def main(argv=None):
        parse_args(Args, argv, prog="prog")

    assert main(["--num-patient", "3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean --num-patients?" in err and "Traceback" not in err
    assert main(["--num-patients", "many"]) == 2
    assert "expected an integer" in capsys.readouterr().err


def test_convert_rules():
    assert convert("1e-4", float) == pytest.approx(1e-4)
    assert convert(3.0, int) == 3
    with pytest.raises(ValueError):
        convert(3.5, int)
    assert convert("none", Optional[int]) is None
    assert convert("yes", bool) is True
    with pytest.raises(ValueError):
        convert("maybe", bool)


def test_to_argv_round_trip():
    a = Args(num_patients=9, use_clinvec=True, vocab_types=["atc", "cpt"], code="401")
    assert parse_args(Args, to_argv(a)) == a


def test_cli_entry_internal_error_is_one_line(capsys):
    @cli_entry
    def main(argv=None):
        raise RuntimeError("boom")

    assert main([]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "Traceback" not in err


def test_broken_pipe_is_quiet():
    import subprocess
    import sys

    code = ("from exmed_bert.errors import cli_entry\n"
            "@cli_entry\n"
            "def main():\n"
            "    for i in range(100000):\n"
            "        print('line', i)\n"
            "import sys; sys.exit(main())\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()  # like `| head -1`
    err = p.stderr.read().decode()
    assert p.wait(30) == 141 and "internal error" not in err and "Traceback" not in err
