"""ClinVec code embeddings: release loader, code matching with hierarchical fallback, resizing, demo files.

The public functions are the contract in docs/ARCHITECTURE.md. They are imported lazily so that
`available_codes` (used by the generator) does not pull in torch or transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "available_codes": "exmed_bert.clinvec.loader",
    "load_clinvec": "exmed_bert.clinvec.loader",
    "ClinVecTable": "exmed_bert.clinvec.loader",
    "match_tokens": "exmed_bert.clinvec.match",
    "code_embedding_size_for": "exmed_bert.clinvec.resize",
    "resolve_method": "exmed_bert.clinvec.resize",
    "Resizer": "exmed_bert.clinvec.resize",
    "init_code_embeddings": "exmed_bert.clinvec.init",
    "freeze_callback": "exmed_bert.clinvec.freeze",
    "resolve_clinvec_dir": "exmed_bert.clinvec.resolve",
    "is_demo": "exmed_bert.clinvec.resolve",
    "build_demo_clinvec": "exmed_bert.clinvec.demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'exmed_bert.clinvec' has no attribute {name!r}")
