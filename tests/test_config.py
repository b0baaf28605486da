"""Config system: flags, config.yaml, precedence, type conversion and one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import pytest

from exmed_bert.config import convert, load_yaml, parse_args, to_argv
from exmed_bert.errors import UserError, cli_entry


@dataclass
class Args:
    yaml_section: ClassVar[str | None] = None
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


def test_defaults_and_flags():
    a = parse_args(Args, ["-n", "5", "--use-clinvec", "--vocab-types", "atc,cpt", "--seed", "3"])
    assert (a.num_patients, a.use_clinvec, a.vocab_types, a.seed) == (5, True, ["atc", "cpt"], 3)
    assert parse_args(Args, []) == Args()


def test_yaml_precedence_and_types(tmp_path, monkeypatch):
    monkeypatch.setattr("exmed_bert.config.known_keys", lambda: {None: {"config", *Args.__dataclass_fields__}})
    # yaml 1.1 reads 1e-4 as a string and 401 as an int: the declared type decides.
    cfg = write(tmp_path, "num_patients: 50\nlearning_rate: 1e-4\ncode: 401\n"
                          "clinvec_params:\n  use_clinvec: true\n  vocab_types: [atc]\n")
    a = parse_args(Args, ["--config", str(cfg)])
    assert a.num_patients == 50 and a.learning_rate == pytest.approx(1e-4) and isinstance(a.learning_rate, float)
    assert a.code == "401" and a.use_clinvec is True and a.vocab_types == ["atc"]
    b = parse_args(Args, ["--config", str(cfg), "--num-patients", "7", "--no-use-clinvec"])
    assert b.num_patients == 7 and b.use_clinvec is False and b.code == "401"


def test_unknown_yaml_key_names_nearest(tmp_path, monkeypatch):
    monkeypatch.setattr("exmed_bert.config.known_keys", lambda: {None: {"config", *Args.__dataclass_fields__}})
    cfg = write(tmp_path, "num_patiens: 50\n")
    with pytest.raises(UserError, match=r"config.yaml: unknown key 'num_patiens'; did you mean 'num_patients'"):
        load_yaml(cfg)
    cfg = write(tmp_path, "clinvec_params:\n  use_clinvc: true\n")
    with pytest.raises(UserError, match="clinvec_params.use_clinvec"):
        load_yaml(cfg)


def test_wrong_type_in_yaml(tmp_path, monkeypatch):
    monkeypatch.setattr("exmed_bert.config.known_keys", lambda: {None: {"config", *Args.__dataclass_fields__}})
    cfg = write(tmp_path, "num_patients: lots\n")
    with pytest.raises(UserError, match=r"config.yaml: num_patients: expected an integer"):
        parse_args(Args, ["--config", str(cfg)])
    cfg = write(tmp_path, "resize_method: zoom\n")
    with pytest.raises(UserError, match="resize_method must be one of auto, pca"):
        parse_args(Args, ["--config", str(cfg)])


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
