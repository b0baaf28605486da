"""Matching vocabulary tokens to ClinVec codes (normalisation, parent fallback per system) and the
rows and coverage report init_code_embeddings returns (it writes and prints nothing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from exmed_bert.clinvec.init import format_summary, init_code_embeddings
from exmed_bert.clinvec.loader import ClinVecTable, load_clinvec
from exmed_bert.clinvec.match import coverage_counts, match_tokens
from exmed_bert.clinvec.release import resolve_clinvec_dir
from exmed_bert.clinvec.resize import resolve_method
from exmed_bert.synthetic.clinvec_demo import ensure_demo_release, write_node_table, write_vector_csv

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def table(vocab: str, node_ids: list[str]) -> ClinVecTable:
    n = len(node_ids)
    return ClinVecTable(vocab, node_ids, np.arange(n), np.eye(n, 128, dtype=np.float32))


TABLES = {
    # The release spells some codes differently from the vocabulary: undotted ICD, zero-padded phecode.
    "icd10cm": table("icd10cm", ["E1165:icd10cm", "E11.6:icd10cm", "E11:icd10cm", "I10:icd10cm"]),
    "atc": table("atc", ["N02BE01:atc", "N02B:atc", "A:atc"]),
    "cpt": table("cpt", ["99213:cpt"]),
    "phecode": table("phecode", ["8.0:phecode"]),
}


def by_token(matches):
    return {m.token: (m.source, m.matched) for m in matches}


def test_exact_matches_after_normalisation_and_special_tokens_are_skipped():
    tokens = SPECIALS + ["icd10cm:E11.65", "icd10cm:I10", "atc:N02BE01", "cpt:99213", "phecode:008"]
    got = by_token(match_tokens(tokens, TABLES, use_hierarchical_init=False))
    assert got == {"icd10cm:E11.65": ("exact", "E1165:icd10cm"), "icd10cm:I10": ("exact", "I10:icd10cm"),
                   "atc:N02BE01": ("exact", "N02BE01:atc"), "cpt:99213": ("exact", "99213:cpt"),
                   "phecode:008": ("exact", "8.0:phecode")}


def test_parent_fallback_takes_the_nearest_ancestor_per_system():
    tokens = ["icd10cm:E11.69", "icd10cm:E11.319", "icd10cm:I11.0", "atc:N02BE05", "atc:A10BA02", "atc:C10AA05",
              "cpt:99214"]
    got = by_token(match_tokens(tokens, TABLES, use_hierarchical_init=True))
    assert got == {
        "icd10cm:E11.69": ("parent", "E11.6:icd10cm"),   # E11.69 -> E11.6
        "icd10cm:E11.319": ("parent", "E11:icd10cm"),    # E11.31, E11.3 absent -> E11
        "icd10cm:I11.0": ("random", None),               # no ancestor in the release
        "atc:N02BE05": ("parent", "N02B:atc"),           # N02BE absent -> N02B
        "atc:A10BA02": ("parent", "A:atc"),              # down to the anatomical main group
        "atc:C10AA05": ("random", None),
        "cpt:99214": ("random", None),                   # CPT has no hierarchy
    }


def test_without_hierarchical_init_misses_are_random():
    got = by_token(match_tokens(["icd10cm:E11.69", "atc:N02BE05"], TABLES, use_hierarchical_init=False))
    assert got == {"icd10cm:E11.69": ("random", None), "atc:N02BE05": ("random", None)}


def test_tokens_of_unloaded_systems_and_malformed_codes_are_random():
    only_icd = {"icd10cm": TABLES["icd10cm"]}
    got = by_token(match_tokens(["atc:N02BE01", "icd10cm:??", "rxnorm:123"], only_icd, use_hierarchical_init=True))
    assert {s for s, _ in got.values()} == {"random"}


def test_coverage_counts():
    tokens = ["icd10cm:E11.65", "icd10cm:E11.69", "icd10cm:I11.0", "atc:N02BE05", "cpt:99214", "cpt:99213"]
    counts = coverage_counts(match_tokens(tokens, TABLES, use_hierarchical_init=True))
    assert counts == {"icd10cm": {"exact": 1, "parent": 1, "random": 1},
                      "atc": {"exact": 0, "parent": 1, "random": 0},
                      "cpt": {"exact": 1, "parent": 0, "random": 1}}


# --- init_code_embeddings: rows and the coverage report ------------------------------------------------

class StandIn(nn.Module):
    """The two things init needs from a model: a config with the resize method, and get_input_embeddings()."""

    def __init__(self, vocab_size: int, hidden: int, method: str):
        super().__init__()
        self.config = type("Cfg", (), {"hidden_size": hidden, "clinvec_resize_method": method})()
        self.emb = nn.Embedding(vocab_size, hidden)

    def get_input_embeddings(self):
        return self.emb


def release(folder: Path) -> dict[str, np.ndarray]:
    """ICD E11, E11.6 and ATC N02BE in release format; returns node_id -> vector."""
    rng = np.random.default_rng(0)
    nodes = [("E11:icd10cm", "ICD10CM", 70), ("E11.6:icd10cm", "ICD10CM", 12), ("N02BE:atc", "ATC", 31)]
    vecs = {n: rng.normal(size=128).astype(np.float32) for n, _, _ in nodes}
    write_node_table(folder / "ClinGraph_nodes.csv", [(n, "", t, i) for n, t, i in nodes])
    write_vector_csv(folder / "ClinVec_icd10cm.csv", np.array([12, 70]),
                     np.stack([vecs["E11.6:icd10cm"], vecs["E11:icd10cm"]]))
    write_vector_csv(folder / "ClinVec_atc.csv", np.array([31]), vecs["N02BE:atc"][None])
    return vecs


TOKENS = SPECIALS + ["atc:N02BE01", "cpt:99213", "icd10cm:E11", "icd10cm:E11.65", "icd10cm:I10"]


def test_init_returns_rows_and_report_and_writes_and_prints_nothing(tmp_path, capsys):
    vecs = release(tmp_path / "ClinVec")
    model = StandIn(len(TOKENS), 128, resolve_method("auto", 128))
    before = model.emb.weight.detach().clone()
    tables = load_clinvec(tmp_path / "ClinVec", ["icd10cm", "atc"])
    rows = init_code_embeddings(model, TOKENS, tables, source=tmp_path / "ClinVec", use_hierarchical_init=True,
                                seed=0, requested_method="auto")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ClinVec"] and capsys.readouterr() == ("", "")
    assert torch.equal(model.emb.weight.detach(), before)  # computed, not applied: copy_into does that
    report = rows.report
    assert report["demo"] is False and report["resize_method"] == "auto"
    assert report["resize_method_used"] == "identity"
    assert report["vocabularies"] == {"atc": {"exact": 0, "parent": 1, "random": 0},
                                      "cpt": {"exact": 0, "parent": 0, "random": 1},
                                      "icd10cm": {"exact": 1, "parent": 1, "random": 1}}
    assert report["tokens"]["icd10cm:E11.65"] == {"source": "parent", "matched": "E11.6:icd10cm"}
    assert report["tokens"]["cpt:99213"] == {"source": "random", "matched": None}
    assert "[PAD]" not in report["tokens"]
    assert report["initialized_row_ids"] == rows.row_ids == [5, 7, 8]
    rows.copy_into(model)
    w = model.emb.weight.detach()
    assert torch.equal(w[5], torch.from_numpy(vecs["N02BE:atc"]))        # hidden 128: exact ClinVec rows
    assert torch.equal(w[7], torch.from_numpy(vecs["E11:icd10cm"]))
    assert torch.equal(w[8], torch.from_numpy(vecs["E11.6:icd10cm"]))
    assert torch.equal(w[[0, 1, 2, 3, 4, 6, 9]], before[[0, 1, 2, 3, 4, 6, 9]])  # the rest keep the model's init
    summary = format_summary(report)
    assert "icd10cm" in summary and "66.7%" in summary


def test_init_from_an_empty_folder_uses_the_demo_and_says_so(tmp_path, capsys):
    (tmp_path / "ClinVec").mkdir()
    tokens = SPECIALS + ["icd10cm:E11.65", "icd10cm:E11.36", "cpt:99213", "cpt:00000"]
    ensure_demo_release(tmp_path / "ClinVec")  # no release there: the demo release is built beside it
    folder = resolve_clinvec_dir(tmp_path / "ClinVec")
    model = StandIn(len(tokens), 32, resolve_method("auto", 32))
    rows = init_code_embeddings(model, tokens, load_clinvec(folder, "icd10cm,atc,cpt"), source=folder,
                                use_hierarchical_init=True, seed=0)
    report = rows.report
    assert report["demo"] is True and report["resize_method_used"] == "pca"
    assert report["tokens"]["icd10cm:E11.36"]["source"] == "parent"    # the generator's novel sibling
    assert report["tokens"]["cpt:00000"]["source"] == "random"
    assert "DEMO" in capsys.readouterr().err and "DEMO" in format_summary(report)
