"""The ClinVec rows of a model's code table, and the coverage report: computed, never written or printed.

Rows with an exact or ancestor match get the (resized) ClinVec vector; all other rows keep the model's
own `--initialization`. The resize method is the one the model's config records (decided once, when the
model was built). Nothing is rescaled by default, so with hidden size 128 (or learned_projection) the
initialised rows equal the release's vectors exactly; `rescale=True` matches the model's row norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from exmed_bert.clinvec.loader import ClinVecTable
from exmed_bert.clinvec.match import SOURCES, Match, coverage_counts, match_tokens
from exmed_bert.clinvec.release import is_demo
from exmed_bert.clinvec.resize import Resizer

COVERAGE_FILE = "clinvec_coverage.json"


@dataclass
class ClinVecRows:
    """What ClinVec sets in a code table: `values[k]` goes to row `row_ids[k]`; `report` is the coverage."""

    row_ids: list[int]
    values: torch.Tensor  # (M, E) in the table's dtype, E = the table's width
    report: dict

    def copy_into(self, model) -> None:
        """Write the rows into `model.get_input_embeddings()`."""
        weight = model.get_input_embeddings().weight
        if self.row_ids:
            with torch.no_grad():
                weight[torch.tensor(self.row_ids, dtype=torch.long)] = self.values.to(weight.device, weight.dtype)


def init_code_embeddings(model, tokens: Sequence[str], tables: dict[str, ClinVecTable], *, source: str | Path,
                         use_hierarchical_init: bool, seed: int, requested_method: str | None = None,
                         rescale: bool = False) -> ClinVecRows:
    """The ClinVec rows for `model`'s code table (row i is `tokens[i]`) and the coverage report.

    `tables` come from `source` (loader.load_clinvec). The resize method is `model.config.clinvec_resize_method`
    (`requested_method`, e.g. "auto", is only recorded). Reads the model, changes nothing: `ClinVecRows.copy_into`
    does. The report's `initialized_row_ids` are the rows set from ClinVec (for `freeze_callback`).
    """
    tokens = list(tokens)
    weight = model.get_input_embeddings().weight.detach()    # (V, E), E = code_embedding_size or hidden
    if weight.shape[0] != len(tokens):
        raise ValueError(f"code table has {weight.shape[0]} rows but the vocabulary {len(tokens)} tokens")
    width = weight.shape[1]
    dim = next(iter(tables.values())).vectors.shape[1]
    method = model.config.clinvec_resize_method
    if method is None or (method in ("identity", "learned_projection") and width != dim):
        raise ValueError(f"the model's config records resize method {method!r} for a {width}-wide code table and "
                         f"{dim}-d ClinVec vectors; build it with the method resolve_method chose")

    matches = match_tokens(tokens, tables, use_hierarchical_init=use_hierarchical_init)
    hits = [(i, m) for i, m in _rows(tokens, matches) if m.source != "random"]
    resizer = Resizer(method, width, seed=seed).fit(np.concatenate([t.vectors for t in tables.values()]))
    values = weight.new_zeros((0, width))
    if hits:
        rows = np.stack([tables[m.vocab].vectors[m.row] for _, m in hits])   # (M, dim)
        values = torch.from_numpy(resizer.transform(rows)).to(weight.dtype)  # (M, width)
        if rescale:
            values = values * _scale(weight, torch.tensor([i for i, _ in hits]), values)
    report = {
        "demo": is_demo(source),
        "clinvec_dir": str(source),
        "vocab_types": list(tables),
        "use_hierarchical_init": bool(use_hierarchical_init),
        "resize_method": requested_method or method,
        "resize_method_used": method,
        "clinvec_dim": int(dim),
        "code_table_dim": int(width),
        "rescaled": bool(rescale),
        "vocabularies": coverage_counts(matches),
        "tokens": {m.token: {"source": m.source, "matched": m.matched} for m in matches},
        "initialized_row_ids": [i for i, _ in hits],
    }
    return ClinVecRows([i for i, _ in hits], values, report)


def _rows(tokens: list[str], matches: list[Match]):
    """Pair each match with its token's row id (matches skip special tokens, so look ids up)."""
    ids = {t: i for i, t in enumerate(tokens)}
    return [(ids[m.token], m) for m in matches]


def _scale(weight: torch.Tensor, ids: torch.Tensor, values: torch.Tensor) -> float:
    """Factor giving the ClinVec rows the mean row norm of the model's own (non-ClinVec) rows."""
    keep = torch.ones(weight.shape[0], dtype=torch.bool)
    keep[ids] = False
    own = weight[keep].norm(dim=1)
    own = own[own > 0]  # the padding row is zero
    target = float(own.mean()) if len(own) else 1.0
    return target / max(float(values.norm(dim=1).mean()), 1e-12)


def format_summary(report: dict) -> str:
    """The coverage table printed after initialisation."""
    title = "ClinVec coverage" + (" -- DEMO embeddings (synthetic, not the real release)" if report["demo"] else "")
    lines = [title, f"{'vocabulary':<12}{'tokens':>8}{'exact':>8}{'parent':>8}{'random':>8}{'covered':>9}"]
    total = dict.fromkeys(SOURCES, 0)
    for system, c in report["vocabularies"].items():
        lines.append(_row(system, c))
        for k in SOURCES:
            total[k] += c[k]
    lines.append(_row("total", total))
    lines.append(f"source: {report['clinvec_dir']}; resize: {report['resize_method']} -> "
                 f"{report['resize_method_used']} ({report['clinvec_dim']} -> {report['code_table_dim']})"
                 + ("; rescaled to the model's row norm" if report["rescaled"] else ""))
    return "\n".join(lines)


def _row(name: str, c: dict) -> str:
    n = sum(c.values())
    pct = 100.0 * (c["exact"] + c["parent"]) / n if n else 0.0
    return f"{name:<12}{n:>8}{c['exact']:>8}{c['parent']:>8}{c['random']:>8}{pct:>8.1f}%"
