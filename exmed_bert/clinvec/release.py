"""The ClinVec release's layout: its file names, vocabularies, vector width and the demo marker; the checks
that need no file read; and which folder pretraining reads (`resolve_clinvec_dir`: the release, else the
demo release beside it). Light (no pandas): --help, config.yaml and the generator read it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from exmed_bert.codes import SYSTEMS
from exmed_bert.errors import UserError

NODE_TABLE = "ClinGraph_nodes.csv"
RELEASE_VOCABS = ("icd10cm", "icd9cm", "atc", "cpt", "rxnorm", "phecode", "lnc", "snomedct", "umls")
# The release's vocabularies that are code systems here (exmed_bert.codes): the only ones a vocabulary token
# can match, so the choices of --vocab-types.
VOCAB_TYPES = tuple(s for s in SYSTEMS if s in RELEASE_VOCABS)
DIM = 128  # width of the released vectors
DEMO_MARKER = "DEMO_EMBEDDINGS.txt"
DEMO_DIR_NAME = "ClinVec_demo"  # the demo release's folder, beside the requested one (git-ignored)
BUILD_DEMO = "python scripts/build_demo_clinvec.py"  # writes the demo release (its own command)
# `ntype` spellings in the release (ClinVec tutorials use ICD10CM, ATC, CPT, PHECODE, RXNORM, LNC,
# SNOMEDCT_US, UMLS_CUI). Matching is case-insensitive; these are the extra aliases.
NTYPE_ALIASES = {"snomedct": {"snomedct_us"}, "umls": {"umls_cui", "cui"}, "lnc": {"loinc"}}
README_HINT = "see ClinVec/README.md"


def vocab_file(vocab: str) -> str:
    return f"ClinVec_{vocab}.csv"


def code_of(node_id: str) -> str:
    """'E11.65:icd10cm' -> 'E11.65' (the vocabulary suffix follows the last colon)."""
    return node_id.rsplit(":", 1)[0] if ":" in node_id else node_id


def ntype_matches(ntype: str, vocab: str) -> bool:
    n = str(ntype).strip().lower()
    return n == vocab or n in NTYPE_ALIASES.get(vocab, ())


def files_found(clinvec_dir: str | Path) -> list[str]:
    d = Path(clinvec_dir)
    return sorted(p.name for p in d.glob("*.csv")) if d.is_dir() else []


def has_clinvec_files(folder: str | Path) -> bool:
    """Does `folder` hold any ClinVec file (the node table or a ClinVec_<vocab>.csv)?"""
    folder = Path(folder)
    return folder.is_dir() and ((folder / NODE_TABLE).is_file() or any(folder.glob("ClinVec_*.csv")))


def check_vocab_types(vocab_types) -> list[str]:
    """Validate `--vocab-types` (a list or a comma-separated string); returns lower-case names."""
    if isinstance(vocab_types, str):
        vocab_types = vocab_types.split(",")
    out = [str(v).strip().lower() for v in vocab_types if str(v).strip()]
    for v in out:
        if v not in VOCAB_TYPES:
            raise UserError(f"--vocab-types: unknown ClinVec vocabulary '{v}'; choose from {', '.join(VOCAB_TYPES)}")
    if not out:
        raise UserError("--vocab-types: name at least one vocabulary, e.g. icd10cm,atc,cpt")
    return list(dict.fromkeys(out))


def expected_dim(clinvec_dir: str | Path) -> int:
    """128 for the release; a demo folder may declare another width in its marker (`dim=N`)."""
    marker = Path(clinvec_dir) / DEMO_MARKER
    if marker.is_file():
        for line in marker.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("dim="):
                try:
                    return int(line[4:])
                except ValueError:
                    break
    return DIM


def is_demo(folder: str | Path) -> bool:
    """Does `folder` hold DEMO embeddings (built by scripts/build_demo_clinvec.py), not the release?"""
    return (Path(folder) / DEMO_MARKER).is_file()


def demo_dir_for(clinvec_dir: str | Path) -> Path:
    """Where the demo release of a requested folder sits: `ClinVec` -> `ClinVec_demo`, beside it."""
    return Path(clinvec_dir).parent / DEMO_DIR_NAME


def build_demo_command(clinvec_dir: str | Path) -> str:
    """The command that writes the demo release `resolve_clinvec_dir(clinvec_dir)` falls back to."""
    demo = demo_dir_for(clinvec_dir)
    return BUILD_DEMO if demo == Path(DEMO_DIR_NAME) else f"{BUILD_DEMO} --output {shlex.quote(str(demo))}"


def resolve_clinvec_dir(clinvec_dir: str | Path) -> Path:
    """The folder pretraining reads ClinVec vectors from: `clinvec_dir` when it holds any ClinVec file (a
    partial release then fails loudly in the loader); else the demo release beside it (`demo_dir_for`,
    marked by DEMO_MARKER, which its builder writes last). Neither: a UserError saying what to do."""
    clinvec_dir = Path(clinvec_dir)
    if has_clinvec_files(clinvec_dir):
        return clinvec_dir
    demo = demo_dir_for(clinvec_dir)
    if is_demo(demo) and has_clinvec_files(demo):
        return demo
    raise UserError(f"{clinvec_dir}: no ClinVec files ({NODE_TABLE}, ClinVec_<vocab>.csv) and no demo release in "
                    f"{demo}; put the release files in {clinvec_dir}/ ({README_HINT}), or build the DEMO "
                    f"embeddings with `{build_demo_command(clinvec_dir)}`")


def demo_notice(requested: str | Path, folder: str | Path) -> str | None:
    """The warning for a run whose vectors come from `folder` (resolved from `requested`) when it holds DEMO
    embeddings; None for the release."""
    if not is_demo(folder):
        return None
    if Path(requested) == Path(folder):
        return (f"WARNING: {folder}/ holds DEMO ClinVec embeddings (synthetic, NOT the real release); "
                f"{README_HINT} for the real files.")
    return (f"WARNING: using DEMO ClinVec embeddings from {folder}/ -- synthetic vectors built from this "
            f"project's code hierarchies, NOT the real ClinVec release. No ClinVec files in {requested}/; "
            f"download them as described in ClinVec/README.md.")
