"""Initialise a model's code-embedding rows from ClinVec and write the coverage report.

Rows with an exact or ancestor match get the (resized) ClinVec vector; all other rows keep the model's
own `--initialization`. Nothing is rescaled by default, so with hidden size 128 (or learned_projection)
the initialised rows equal the release's vectors exactly; `rescale=True` matches the model's row norm.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from exmed_bert.clinvec.loader import check_vocab_types, load_clinvec
from exmed_bert.clinvec.match import SOURCES, Match, coverage_counts, match_tokens
from exmed_bert.clinvec.resize import Resizer, resolve_method
from exmed_bert.clinvec.resolve import is_demo, resolve_clinvec_dir
from exmed_bert.io import write_json

log = logging.getLogger("exmed_bert.clinvec")

COVERAGE_FILE = "clinvec_coverage.json"


def init_code_embeddings(model, vocab, *, clinvec_dir, vocab_types, use_hierarchical_init: bool,
                         resize_method: str, output_dir, seed: int, rescale: bool = False) -> dict:
    """Copy ClinVec vectors into `model.get_input_embeddings()`; returns (and writes) the coverage report.

    `vocab` is a `Vocab` (or any object with `tokens`, or a token list) whose ids are the table's rows.
    The report's `initialized_row_ids` are the rows set from ClinVec (for `freeze_callback`).
    """
    import torch

    folder = resolve_clinvec_dir(clinvec_dir)
    demo = is_demo(folder)
    vocabs = check_vocab_types(vocab_types)
    tables = load_clinvec(folder, vocabs)
    tokens = list(getattr(vocab, "tokens", vocab))
    weight = model.get_input_embeddings().weight          # (V, E), E = code_embedding_size or hidden
    if weight.shape[0] != len(tokens):
        raise ValueError(f"code table has {weight.shape[0]} rows but the vocabulary {len(tokens)} tokens")
    width = weight.shape[1]
    dim = next(iter(tables.values())).vectors.shape[1]
    hidden = getattr(getattr(model, "config", None), "hidden_size", width)
    used = resolve_method(resize_method, hidden, dim)
    if width == dim:
        used = "identity" if used != "learned_projection" else used
    elif used in ("learned_projection", "identity"):
        # The table is not dim-wide (the config was built without code_embedding_size): fall back.
        used = resolve_method("auto", width, dim)
        log.warning("ClinVec: code table is %d-d, not %d-d; resizing with %s instead", width, dim, used)

    matches = match_tokens(tokens, tables, use_hierarchical_init=use_hierarchical_init)
    hits = [(i, m) for i, m in _rows(tokens, matches) if m.source != "random"]
    resizer = Resizer(used, width, seed=seed).fit(np.concatenate([t.vectors for t in tables.values()]))
    if hits:
        rows = np.stack([tables[m.vocab].vectors[m.row] for _, m in hits])   # (M, dim)
        new = resizer.transform(rows)                                          # (M, width)
        ids = torch.tensor([i for i, _ in hits], dtype=torch.long)
        with torch.no_grad():
            values = torch.from_numpy(new).to(weight.dtype)
            if rescale:
                values = values * _scale(weight, ids, values)
            weight[ids] = values.to(weight.device)

    report = {
        "demo": demo,
        "clinvec_dir": str(folder),
        "vocab_types": vocabs,
        "use_hierarchical_init": bool(use_hierarchical_init),
        "resize_method": resize_method,
        "resize_method_used": used,
        "clinvec_dim": int(dim),
        "code_table_dim": int(width),
        "rescaled": bool(rescale),
        "vocabularies": coverage_counts(matches),
        "tokens": {m.token: {"source": m.source, "matched": m.matched} for m in matches},
        "initialized_row_ids": [i for i, _ in hits],
    }
    out = Path(output_dir) / COVERAGE_FILE
    write_json(out, report)
    table = format_summary(report)
    print(table)
    if log.hasHandlers():  # print() already reaches the console and training.log's tee
        log.info("%s\ncoverage report: %s", table, out)
    return report


def _rows(tokens: list[str], matches: list[Match]):
    """Pair each match with its token's row id (matches skip special tokens, so look ids up)."""
    ids = {t: i for i, t in enumerate(tokens)}
    return [(ids[m.token], m) for m in matches]


def _scale(weight, ids, values) -> float:
    """Factor giving the ClinVec rows the mean row norm of the model's own (non-ClinVec) rows."""
    import torch

    keep = torch.ones(weight.shape[0], dtype=torch.bool)
    keep[ids] = False
    own = weight.detach()[keep].norm(dim=1)
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
