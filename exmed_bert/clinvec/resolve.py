"""Which folder ClinVec vectors come from: real files in the given folder win; otherwise the demo folder,
built on demand, with a loud warning that DEMO embeddings are in use."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from exmed_bert.clinvec.demo import build_demo_clinvec, demo_is_current
from exmed_bert.clinvec.loader import DEMO_MARKER, has_clinvec_files

log = logging.getLogger("exmed_bert.clinvec")

DEMO_DIR_NAME = "ClinVec_demo"


def is_demo(folder: str | Path) -> bool:
    return (Path(folder) / DEMO_MARKER).is_file()


def demo_dir_for(clinvec_dir: str | Path) -> Path:
    """The demo folder sits beside the requested one: `ClinVec` -> `ClinVec_demo` (git-ignored)."""
    return Path(clinvec_dir).parent / DEMO_DIR_NAME


def resolve_clinvec_dir(clinvec_dir: str | Path) -> Path:
    """`clinvec_dir` when it holds any ClinVec file (a partial release then fails loudly in the loader);
    else the demo folder, built if missing or stale."""
    clinvec_dir = Path(clinvec_dir)
    if has_clinvec_files(clinvec_dir):
        if is_demo(clinvec_dir):
            _warn_demo(clinvec_dir, clinvec_dir)
        return clinvec_dir
    demo = demo_dir_for(clinvec_dir)
    if not demo_is_current(demo):
        log.info("building demo ClinVec embeddings in %s", demo)
        build_demo_clinvec(demo)
    _warn_demo(clinvec_dir, demo)
    return demo


def _warn_demo(requested: Path, demo: Path) -> None:
    msg = (f"WARNING: using DEMO ClinVec embeddings from {demo}/ -- synthetic vectors built from this "
           f"project's code hierarchies, NOT the real ClinVec release. No ClinVec files in {requested}/; "
           "download them as described in ClinVec/README.md.")
    if requested == demo:
        msg = (f"WARNING: {demo}/ holds DEMO ClinVec embeddings (synthetic, NOT the real release); "
               "see ClinVec/README.md for the real files.")
    print(msg, file=sys.stderr)
    if log.hasHandlers():  # else logging's last-resort handler would print it a second time
        log.warning(msg)
