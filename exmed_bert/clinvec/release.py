"""The ClinVec release's layout: its file names, vocabularies, vector width and the demo marker, and the
checks that need no file read. Light (no pandas): --help, config.yaml and the generator read it.
"""

from __future__ import annotations

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
    """Does `folder` hold DEMO embeddings (built by exmed_bert.synthetic.clinvec_demo), not the release?"""
    return (Path(folder) / DEMO_MARKER).is_file()
