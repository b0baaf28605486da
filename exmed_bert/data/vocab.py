"""The code vocabulary: special tokens, then one token per "<system>:<code>", saved as vocab.json."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from exmed_bert.codes import OTHER, OTHER_SYSTEM
from exmed_bert.data.layout import (  # noqa: F401 - re-exported: the vocabulary's names live here too
    CLS_ID, FIRST_CODE_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, SYSTEM_TYPES, UNK_ID)
from exmed_bert.errors import UserError
from exmed_bert.io import write_json

FORMAT = "exmed-bert-vocab"
VERSION = 1
MIN_TYPE_VOCAB_SIZE = 4   # the model's token-type table never shrinks below the default (old checkpoints load)


def system_of(token: str) -> str:
    return token.split(":", 1)[0]


def type_of_token(token: str) -> int:
    """0 for special tokens, 4 for "other:..." tokens, else the type of the token's code system (unknown
    systems -> 1)."""
    if token in SPECIAL_TOKENS:
        return 0
    system = system_of(token)
    return OTHER if system == OTHER_SYSTEM else SYSTEM_TYPES.get(system, 1)


class Vocab:
    """Token <-> id table. Ids 0..4 are the special tokens in SPECIAL_TOKENS order."""

    def __init__(self, tokens: Sequence[str], counts: Sequence[int] | None = None):
        if tuple(tokens[:FIRST_CODE_ID]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary must start with {SPECIAL_TOKENS}")
        self.tokens = list(tokens)
        self.counts = list(counts) if counts is not None else [0] * len(self.tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        if len(self._ids) != len(self.tokens):
            raise ValueError("duplicate tokens in vocabulary")

    @classmethod
    def from_counts(cls, counts: dict[str, int] | Iterable[tuple[str, int]], min_count: int = 1) -> "Vocab":
        """Keep tokens seen at least `min_count` times, sorted by token text (stable, readable ids)."""
        items = counts.items() if isinstance(counts, dict) else counts
        kept = sorted((t, int(c)) for t, c in items if c >= min_count and t not in SPECIAL_TOKENS)
        return cls([*SPECIAL_TOKENS, *(t for t, _ in kept)], [0] * FIRST_CODE_ID + [c for _, c in kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def id(self, token: str) -> int:
        return self._ids.get(token, UNK_ID)

    def token(self, id: int) -> str:
        return self.tokens[int(id)]

    def fingerprint(self) -> str:
        """Short content hash of the token list; datasets record the one they were encoded with."""
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()[:16]

    def token_types(self):
        """LongTensor [V]: 0 special, 1 diagnosis, 2 drug, 3 procedure, 4 other."""
        import torch  # ~200 MB: only models need it; a conversion and its workers read vocabularies without it

        return torch.tensor([type_of_token(t) for t in self.tokens], dtype=torch.long)

    def type_vocab_size(self) -> int:
        """Rows a model's token-type table needs for this vocabulary: 4 (the default), or 5 when it holds
        "other:" tokens (type 4)."""
        return max(MIN_TYPE_VOCAB_SIZE, max((type_of_token(t) for t in self.tokens), default=0) + 1)

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, {"format": FORMAT, "version": VERSION, "tokens": self.tokens, "counts": self.counts},
                   indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocab":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: vocabulary not found; run scripts/convert_synthetic_to_dataset.py first")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: not an ExMed-BERT vocabulary ({e}); re-run the conversion") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise UserError(f"{path}: not an ExMed-BERT vocabulary (format should be '{FORMAT}')")
        if obj.get("version") != VERSION:
            raise UserError(f"{path}: vocabulary version {obj.get('version')} is not supported (expected {VERSION})")
        try:
            return cls(obj["tokens"], obj.get("counts"))
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"{path}: malformed vocabulary: {e}") from None
