"""Typed settings: dataclass fields -> command-line flags and config.yaml keys.

Precedence is default < config.yaml < flag. Values are converted by the declared type, so `1e-4` is a
float and the code "401" stays a string. Unknown keys and flags are errors naming the nearest valid one.
config.yaml holds a section per stage, named as in `stages.REGISTRY` (`generate:`, `pretrain:`, ...); the
guide's flat keys are read too. It is read once (`load_yaml`), checked against every stage's arguments and
resolved into each stage's keys; each stage's dataclass is then filled from them (`from_sections`, or
`parse_args` with flags).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

from exmed_bert.errors import UserError

T = TypeVar("T")
Sections = dict  # {stage: {key: raw yaml value}}, each stage's keys as load_yaml resolved them

_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def convert(value: Any, tp: Any) -> Any:
    """Convert a yaml or command-line value to the declared type; ValueError says what was expected."""
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise ValueError("a value is required")
    if typing.get_origin(base) is list:
        (item_tp,) = typing.get_args(base) or (str,)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError("expected a list or a comma-separated string")
        return [convert(i.strip() if isinstance(i, str) else i, item_tp) for i in items if i != ""]
    if base is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            try:
                f = float(str(value).strip())
            except ValueError:
                raise ValueError(f"expected an integer, got {value!r}") from None
            if not f.is_integer():
                raise ValueError(f"expected an integer, got {value!r}") from None
            return int(f)
    if base is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            return float(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if base is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected text, got a {type(value).__name__}")
        return str(value)
    return value


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        f.type = hints.get(f.name, f.type)
        out[f.name] = f
    return out


def _check_choice(name: str, value: Any, f: dataclasses.Field, where: str) -> None:
    choices = f.metadata.get("choices")
    if choices is None or value is None:
        return
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v not in choices:
            raise UserError(f"{where}: {name} must be one of {', '.join(map(str, choices))}; got {v!r}")


def nearest(name: str, candidates: Sequence[str]) -> str | None:
    hits = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return hits[0] if hits else None


# ---------------------------------------------------------------------------------------------
# config.yaml: a section per stage (named as in stages.REGISTRY), and the guide's flat keys

# The guide writes config.yaml flat: a top-level key (or one in its `clinvec_params:` mapping) sets each of
# these stages that has the field. finetune, rf, xgboost and report read only their own sections.
FLAT_KEY_STAGES = ("generate", "convert", "pretrain", "pipeline")
# The guide's nested mapping whose keys are flat keys.
FLATTENED_SECTIONS = ("clinvec_params",)
# The report stage's section may also go by its script's name (compare-models.py).
SECTION_ALIASES = {"compare": "report"}


def stage_fields() -> dict[str, set[str]]:
    """Each stage's config.yaml keys: the fields of its arguments class in stages.REGISTRY."""
    from exmed_bert.stages import REGISTRY   # every stage's arguments: loaded only to read a config.yaml

    return {name: {f.name for f in dataclasses.fields(cls)} for name, cls in REGISTRY}


def stage_of(cls: type) -> str | None:
    """The stage whose section fills `cls` (None: a class outside stages.REGISTRY reads no section)."""
    from exmed_bert.stages import REGISTRY   # as in stage_fields

    return next((name for name, c in REGISTRY if c is cls), None)


def read_yaml(path: str | Path) -> tuple[dict[str, Any], Sections]:
    """config.yaml as written (the raw mapping, e.g. to write a copy with changes) and its checked sections."""
    raw = _read(Path(path))
    return raw, _sections_noted(raw, path)


def load_yaml(path: str | Path) -> Sections:
    """Read and check config.yaml; returns each stage's keys {stage: {key: raw value}}. A flat key that sets
    two or more stages is named on stderr, once."""
    return _sections_noted(_read(Path(path)), path)


def _sections_noted(raw: dict[str, Any], path: str | Path) -> Sections:
    sections, notices = split_sections(raw, path)
    for line in notices:
        print(line, file=sys.stderr)
    return sections


def _read(path: Path) -> dict[str, Any]:
    import yaml   # only a config.yaml needs it; a stage's command line alone does not

    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of key: value at the top level")
    return raw


def split_sections(raw: dict[str, Any], path: str | Path) -> tuple[Sections, list[str]]:
    """A config.yaml mapping as each stage's keys {stage: {key: raw value}}, and the notices to show.

    A stage's section (`pretrain:`) sets that stage; a flat key (top level or `clinvec_params:`) sets every
    stage of FLAT_KEY_STAGES that has the field, and a section's key wins over it. A flat key that sets two
    or more stages gives one notice naming them. An unknown key names the nearest valid one.
    """
    fields = stage_fields()
    flat_keys = {"config"}.union(*(fields[s] for s in FLAT_KEY_STAGES))
    flat: dict[str, tuple[Any, str]] = {}       # key -> (value, where it was written)
    own: dict[str, dict[str, Any]] = {name: {} for name in fields}
    for key, value in raw.items():
        key = str(key)
        stage = SECTION_ALIASES.get(key, key)
        if stage in fields or key in FLATTENED_SECTIONS:
            if value is None:           # a section with every key commented out
                continue
            if not isinstance(value, dict):
                raise UserError(f"{path}: {key} must be a mapping of key: value")
            valid = fields[stage] if stage in fields else flat_keys - {"config"}
            for sub, sub_value in value.items():
                sub = str(sub)
                if sub not in valid:
                    hint = nearest(sub, sorted(valid))
                    raise UserError(f"{path}: unknown key '{key}.{sub}'"
                                    + (f"; did you mean '{key}.{hint}'?" if hint else ""))
                if stage in fields:
                    own[stage][sub] = sub_value
                else:
                    flat[sub] = (sub_value, key)
        elif key in flat_keys:
            flat[key] = (value, "top level")
        else:
            owners = [s for s in fields if key in fields[s]]
            hint = (f"{owners[0]}.{key}" if owners
                    else nearest(key, sorted(flat_keys | set(fields) | set(FLATTENED_SECTIONS))))
            raise UserError(f"{path}: unknown key '{key}'" + (f"; did you mean '{hint}'?" if hint else ""))
    notices = []
    for key, (value, where) in flat.items():
        reached = [s for s in FLAT_KEY_STAGES if key in fields[s] and key not in own[s]]
        for stage in reached:
            own[stage][key] = value
        if len(reached) > 1:
            names = ", ".join(reached[:-1]) + " and " + reached[-1]
            notices.append(f"{path}: '{key}' ({where}) sets {names}; put it under one stage's section "
                           "to set only that one")
    return own, notices


# ---------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, naming the nearest valid flag."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            bad = message.split(":", 1)[1].split()[0]
            flags = [o for a in self._actions for o in a.option_strings]
            hint = nearest(bad.split("=")[0], flags)
            message = f"unknown option {bad}" + (f"; did you mean {hint}?" if hint else "")
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(cls: type, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description or (cls.__doc__ or "").strip(),
                     allow_abbrev=False, argument_default=argparse.SUPPRESS,
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", metavar="YAML", help="read settings from this YAML file (flags win)")
    for name, f in _fields(cls).items():
        if f.metadata.get("cli") is False:
            continue
        base, _ = _unwrap_optional(f.type)
        names = [*f.metadata.get("aliases", []), flag_name(name)]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        if default is not None and default != [] and default != "":
            help_text += f" (default: {','.join(map(str, default)) if isinstance(default, list) else default})"
        help_text = help_text.replace("%", "%%")
        if base is bool:
            parser.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            def _type(s: str, _tp=f.type, _flag=names[-1]) -> Any:
                try:
                    return convert(s, _tp)
                except ValueError as e:
                    raise argparse.ArgumentTypeError(f"{_flag}: {e}") from None
            choices = f.metadata.get("choices")
            metavar = "{" + ",".join(map(str, choices)) + "}" if choices else None
            parser.add_argument(*names, dest=name, type=_type, help=help_text, metavar=metavar)
    return parser


def _yaml_values(cls: type, sections: Sections, where: str) -> dict[str, Any]:
    """The keys of `cls`'s section, converted by the declared types."""
    fields, values = _fields(cls), {}
    for key, raw in sections.get(stage_of(cls), {}).items():
        if key in fields:
            try:
                values[key] = convert(raw, fields[key].type)
            except ValueError as e:
                raise UserError(f"{where}: {key}: {e}") from None
            _check_choice(key, values[key], fields[key], where)
    return values


def _build(cls: type[T], values: dict[str, Any]) -> T:
    args = cls(**values)
    validate = getattr(args, "validate", None)
    if callable(validate):
        validate()
    return args


def from_sections(cls: type[T], sections: Sections, where: str = "config.yaml",
                  overrides: dict[str, Any] | None = None) -> T:
    """`cls` from defaults < its config.yaml section < `overrides` (values of the declared types), validated."""
    fields = _fields(cls)
    values = _yaml_values(cls, sections, where)
    for key, value in (overrides or {}).items():
        values[key] = convert(value, fields[key].type)
    return _build(cls, values)


def parse_args(cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None,
               description: str | None = None, sections: Sections | None = None) -> T:
    """Resolve `cls` from defaults, then `--config` YAML, then flags. `sections`: config.yaml already read
    (by the caller, who also passed --config), so it is not read again."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(cls, prog=prog, description=description)
    ns = vars(parser.parse_args(argv))
    fields = _fields(cls)
    config = ns.pop("config", None)
    values: dict[str, Any] = {}
    if config:
        values = _yaml_values(cls, load_yaml(config) if sections is None else sections, str(config))
    for key, value in ns.items():
        _check_choice(flag_name(key), value, fields[key], "command line")
        values[key] = value
    return _build(cls, values)


def choices_of(cls: type, name: str) -> tuple:
    """The allowed values of field `name` (its `choices` metadata), for prompts and help outside argparse."""
    return tuple(_fields(cls)[name].metadata["choices"])


def config_path(argv: Sequence[str], default: str | None = None) -> str | None:
    """The value of `--config` in argv (either `--config F` or `--config=F`), else `default`."""
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return default


def to_argv(args: Any, only_changed: bool = True) -> list[str]:
    """The flags that reproduce an args instance, for printing a command to rerun a stage by hand (never
    parsed back by the pipeline)."""
    out: list[str] = []
    for name, f in _fields(type(args)).items():
        if f.metadata.get("cli") is False:
            continue
        value = getattr(args, name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if only_changed and value == default:
            continue
        base, _ = _unwrap_optional(f.type)
        if base is bool:
            out.append(flag_name(name) if value else "--no-" + name.replace("_", "-"))
        elif value is None:
            out += [flag_name(name), "none"]
        elif isinstance(value, list):
            out += [flag_name(name), ",".join(map(str, value))]
        else:
            out += [flag_name(name), str(value)]
    return out
