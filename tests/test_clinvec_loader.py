"""ClinVec release loader: both index-column layouts, join by node_index, every bad-input case, demo files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exmed_bert.clinvec.loader import available_codes, load_clinvec, read_vectors
from exmed_bert.clinvec.release import DEMO_MARKER, demo_notice, is_demo, resolve_clinvec_dir
from exmed_bert.errors import UserError
from exmed_bert.synthetic.clinvec_demo import (DEMO_VERSION, build_demo_clinvec, demo_is_current,
                                               ensure_demo_release, write_node_table, write_vector_csv)

DIM = 128
# (node_id, ntype, node_index): global indices, deliberately not 0..N-1 and not sorted by vocabulary.
NODES = [("E11.65:icd10cm", "ICD10CM", 907), ("E11.6:icd10cm", "ICD10CM", 15), ("E11:icd10cm", "ICD10CM", 400),
         ("I10:icd10cm", "ICD10CM", 3), ("N02BE01:atc", "ATC", 88), ("N02BE:atc", "ATC", 1200),
         ("99213:cpt", "CPT", 51)]


def vector_for(node_index: int) -> np.ndarray:
    """A vector that identifies its node: a positional join would pick another node's values."""
    return (np.arange(DIM, dtype=np.float32) / DIM + node_index).astype(np.float32)


def write_release(folder: Path, header: str = "", nodes=NODES, shuffle: bool = True) -> Path:
    """A tiny release: node table (sorted by node_index) + one vector file per vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    write_node_table(folder / "ClinGraph_nodes.csv", [(n, n.split(":")[0], t, i) for n, t, i in nodes])
    by_vocab: dict[str, list[int]] = {}
    for node_id, _, idx in nodes:
        by_vocab.setdefault(node_id.rsplit(":", 1)[1], []).append(idx)
    for vocab, idx in by_vocab.items():
        idx = np.array(sorted(idx, reverse=shuffle))  # node table is ascending: reversed rows != positions
        path = folder / f"ClinVec_{vocab}.csv"
        write_vector_csv(path, idx, np.stack([vector_for(i) for i in idx]))
        if header == "node_index":
            text = path.read_text()
            path.write_text("node_index" + text)
        elif header == "implicit":  # header lists only the value columns; rows are one field longer
            text = path.read_text()
            path.write_text(text[1:])
    return folder


@pytest.mark.parametrize("header", ["", "node_index", "implicit"])
def test_loads_every_index_layout_and_joins_by_node_index(tmp_path, header):
    tables = load_clinvec(write_release(tmp_path, header), ["icd10cm", "atc"])
    assert set(tables) == {"icd10cm", "atc"}
    icd = tables["icd10cm"]
    assert icd.vectors.dtype == np.float32 and icd.vectors.shape == (4, DIM)
    by_id = dict(zip(icd.node_ids, icd.vectors))
    # E11.65 has node_index 907; its row in the file is not the row of E11.65 in the node table.
    np.testing.assert_array_equal(by_id["E11.65:icd10cm"], vector_for(907))
    np.testing.assert_array_equal(by_id["I10:icd10cm"], vector_for(3))
    assert icd.codes[icd.node_ids.index("E11.6:icd10cm")] == "E11.6"


def test_shuffled_rows_defeat_a_positional_join(tmp_path):
    folder = write_release(tmp_path, shuffle=True)
    index, vectors = read_vectors(folder / "ClinVec_icd10cm.csv")
    assert list(index) == [907, 400, 15, 3]           # file order
    table = load_clinvec(folder, "icd10cm")["icd10cm"]
    # The node table lists I10 (3) first; a positional join would give I10 the first file row (907).
    np.testing.assert_array_equal(table.vectors[table.node_ids.index("I10:icd10cm")], vector_for(3))
    assert not np.array_equal(vectors[0], vector_for(3))


def _edit_line(path: Path, lineno: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def _drop_last_column(path: Path) -> None:
    path.write_text("\n".join(",".join(l.split(",")[:-1]) for l in path.read_text().splitlines()) + "\n")


@pytest.mark.parametrize("case, expect", [
    ("127_columns", r"ClinVec_icd10cm\.csv: 127 value columns, expected 128"),
    ("ragged_row_long", r"ClinVec_icd10cm\.csv: rows have different widths"),
    ("ragged_row_short", r"ClinVec_icd10cm\.csv: line 3: value column 128 is nan"),
    ("non_numeric", r"ClinVec_icd10cm\.csv: line 2: value column 5 is 'abc', not a number"),
    ("nan", r"ClinVec_icd10cm\.csv: line 4: value column 1 is nan"),
    ("inf", r"ClinVec_icd10cm\.csv: line 2: value column 2 is inf"),
    ("wrong_ntype", r"ClinVec_icd10cm\.csv: line \d: node_index 88 is 'N02BE01:atc' with ntype 'ATC'"),
    ("unknown_index", r"ClinVec_icd10cm\.csv: line 2: node_index 5555 is not in ClinGraph_nodes\.csv"),
    ("duplicate_index", r"ClinVec_icd10cm\.csv: node_index 400 appears more than once"),
    ("no_node_table", r"ClinGraph_nodes\.csv: ClinVec node table not found.*files found: ClinVec_atc\.csv"),
    ("comma_node_table", r"ClinGraph_nodes\.csv: missing column\(s\) node_id, ntype, node_index; expected a TAB"),
    ("missing_vocab_file", r"ClinVec_icd10cm\.csv not found \(requested by --vocab-types\); files found: "
                           r"ClinGraph_nodes\.csv, ClinVec_atc\.csv, ClinVec_cpt\.csv"),
    ("empty_file", r"ClinVec_icd10cm\.csv: empty file"),
    ("bad_index_header", r"ClinVec_icd10cm\.csv: first column must be the node_index"),
])
def test_bad_release_files_fail_with_one_line_naming_the_file(tmp_path, case, expect):
    folder = write_release(tmp_path)
    icd = folder / "ClinVec_icd10cm.csv"
    if case == "127_columns":
        _drop_last_column(icd)
    elif case == "ragged_row_long":
        _edit_line(icd, 3, lambda l: l + ",0.5")
    elif case == "ragged_row_short":
        _edit_line(icd, 3, lambda l: l.rsplit(",", 1)[0])
    elif case == "non_numeric":
        _edit_line(icd, 2, lambda l: ",".join(v if i != 5 else "abc" for i, v in enumerate(l.split(","))))
    elif case == "nan":
        _edit_line(icd, 4, lambda l: ",".join(v if i != 1 else "nan" for i, v in enumerate(l.split(","))))
    elif case == "inf":
        _edit_line(icd, 2, lambda l: ",".join(v if i != 2 else "inf" for i, v in enumerate(l.split(","))))
    elif case == "wrong_ntype":  # an ATC node's row inside the ICD-10-CM file
        _edit_line(icd, 3, lambda l: "88," + l.split(",", 1)[1])
    elif case == "unknown_index":
        _edit_line(icd, 2, lambda l: "5555," + l.split(",", 1)[1])
    elif case == "duplicate_index":
        _edit_line(icd, 4, lambda l: "400," + l.split(",", 1)[1])
    elif case == "no_node_table":
        (folder / "ClinGraph_nodes.csv").unlink()
    elif case == "comma_node_table":
        nodes = folder / "ClinGraph_nodes.csv"
        nodes.write_text(nodes.read_text().replace("\t", ","))
    elif case == "missing_vocab_file":
        icd.unlink()
    elif case == "empty_file":
        icd.write_text("")
    elif case == "bad_index_header":
        _edit_line(icd, 1, lambda l: "code" + l)
    with pytest.raises(UserError, match=expect) as err:
        load_clinvec(folder, "icd10cm,atc")
    assert "\n" not in str(err.value)


def test_ntype_is_matched_case_insensitively(tmp_path):
    nodes = [(n, t.lower(), i) for n, t, i in NODES]
    tables = load_clinvec(write_release(tmp_path, nodes=nodes), ["icd10cm"])
    assert len(tables["icd10cm"].node_ids) == 4


def test_unknown_vocab_type_lists_the_choices(tmp_path):
    with pytest.raises(UserError, match=r"--vocab-types: unknown ClinVec vocabulary 'icd11'; choose from icd10cm"):
        load_clinvec(write_release(tmp_path), "icd10cm,icd11")


def test_available_codes_normalises_release_codes(tmp_path):
    nodes = [("E1165:icd10cm", "ICD10CM", 1), ("n02be01:atc", "ATC", 2), ("008:phecode", "PHECODE", 3),
             ("99213:cpt", "CPT", 4), ("C0011849:umls", "UMLS_CUI", 5)]
    folder = write_release(tmp_path, nodes=nodes)
    assert available_codes(folder) == {"icd10cm:E11.65", "atc:N02BE01", "phecode:8.0", "cpt:99213"}
    assert available_codes(folder, ["atc"]) == {"atc:N02BE01"}


# --- demo embeddings ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return build_demo_clinvec(tmp_path_factory.mktemp("demo") / "ClinVec_demo")


def test_demo_is_in_release_format_and_loads(demo_dir):
    header = (demo_dir / "ClinGraph_nodes.csv").read_text().splitlines()[0]
    assert header == "node_id\tnode_name\tntype\tnode_index"
    assert (demo_dir / "ClinVec_icd10cm.csv").read_text().startswith(",0,1,2,")
    tables = load_clinvec(demo_dir, "icd10cm,atc,cpt")
    for t in tables.values():
        assert t.vectors.shape[1] == 128 and np.isfinite(t.vectors).all()
        assert list(t.node_index) != sorted(t.node_index)        # rows are shuffled
    assert is_demo(demo_dir) and demo_is_current(demo_dir)
    assert "NOT the real ClinVec" in (demo_dir / DEMO_MARKER).read_text()


def test_demo_covers_demo_codes_and_leaves_novel_codes_out(demo_dir):
    from exmed_bert.synthetic.embedding_vocab import demo_codes, novel_codes

    codes = available_codes(demo_dir)
    assert codes == demo_codes()
    assert "icd10cm:E11.36" not in codes and "icd10cm:E11.3" in codes  # novel sibling, its parent


def test_demo_vectors_reflect_the_code_graph(demo_dir):
    tables = load_clinvec(demo_dir, "icd10cm")
    v = dict(zip(tables["icd10cm"].node_ids, tables["icd10cm"].vectors))
    cos = lambda a, b: float(v[a] @ v[b] / np.linalg.norm(v[a]) / np.linalg.norm(v[b]))  # noqa: E731
    # a code is closer to its parent than to a code of an unrelated module
    assert cos("E11.65:icd10cm", "E11.6:icd10cm") > cos("E11.65:icd10cm", "I48.91:icd10cm") + 0.3


def test_resolve_reads_real_files_first_then_the_demo_release_beside_them(tmp_path, demo_dir):
    real = write_release(tmp_path / "ClinVec")
    (tmp_path / "ClinVec_demo").symlink_to(demo_dir)
    assert resolve_clinvec_dir(real) == real and demo_notice(real, real) is None   # real files win
    empty = tmp_path / "other" / "ClinVec"
    empty.mkdir(parents=True)
    with pytest.raises(UserError) as e:   # neither: says what to run; builds nothing
        resolve_clinvec_dir(empty)
    assert str(e.value) == (
        f"{empty}: no ClinVec files (ClinGraph_nodes.csv, ClinVec_<vocab>.csv) and no demo release in "
        f"{tmp_path / 'other' / 'ClinVec_demo'}; put the release files in {empty}/ (see ClinVec/README.md), or "
        f"build the DEMO embeddings with `python scripts/build_demo_clinvec.py --output {tmp_path / 'other' / 'ClinVec_demo'}`")
    assert not (tmp_path / "other" / "ClinVec_demo").exists()
    (tmp_path / "other" / "ClinVec_demo").symlink_to(demo_dir)
    assert resolve_clinvec_dir(empty) == tmp_path / "other" / "ClinVec_demo"
    assert "using DEMO ClinVec embeddings" in demo_notice(empty, tmp_path / "other" / "ClinVec_demo")
    assert "holds DEMO ClinVec embeddings" in demo_notice(demo_dir, demo_dir)  # a demo asked for by name


def test_a_half_built_demo_is_not_read(tmp_path):
    (tmp_path / "ClinVec").mkdir()
    half = tmp_path / "ClinVec_demo"
    write_release(half)   # vector files but no marker: the builder writes the marker last
    with pytest.raises(UserError, match="scripts/build_demo_clinvec.py"):
        resolve_clinvec_dir(tmp_path / "ClinVec")


def test_ensure_builds_the_demo_when_asked_and_rebuilds_it_when_stale(tmp_path, capsys, monkeypatch):
    real = write_release(tmp_path / "ClinVec")
    assert ensure_demo_release(real) == real and not (tmp_path / "ClinVec_demo").exists()
    empty = tmp_path / "empty" / "ClinVec"
    empty.mkdir(parents=True)
    demo = ensure_demo_release(empty)
    assert demo == tmp_path / "empty" / "ClinVec_demo" and demo_is_current(demo)
    assert resolve_clinvec_dir(empty) == demo
    assert "building DEMO embeddings" in capsys.readouterr().err
    built = (demo / DEMO_MARKER).stat().st_mtime_ns
    assert ensure_demo_release(empty) == demo and (demo / DEMO_MARKER).stat().st_mtime_ns == built  # current: kept
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("exmed_bert.synthetic.clinvec_demo.DEMO_VERSION", DEMO_VERSION + 1)
    assert not demo_is_current(demo)
    ensure_demo_release(empty)
    assert demo_is_current(demo) and "building DEMO embeddings" in capsys.readouterr().err


def test_demo_builder_refuses_to_overwrite_a_release(tmp_path):
    with pytest.raises(UserError, match="holds a ClinVec release"):
        build_demo_clinvec(write_release(tmp_path / "ClinVec"))


def test_build_demo_cli(tmp_path):
    from exmed_bert.cli.build_demo_clinvec import main

    assert main(["--output", str(tmp_path / "d"), "--dim", "16"]) == 0
    assert load_clinvec(tmp_path / "d", "atc")["atc"].vectors.shape[1] == 16


def test_demo_graph_holds_only_hierarchy_and_clinical_links(monkeypatch):
    """The demo is built from knowledge a real graph has, never the generator's risk model or outcome."""
    import subprocess
    import sys

    from exmed_bert.synthetic import clinvec_demo as demo
    from exmed_bert.synthetic import clinvec_knowledge
    from exmed_bert.synthetic import modules as m

    tokens = demo.demo_tokens()
    nodes, adj = demo.code_graph(tokens)
    assert not [n for n in nodes if n.startswith("module:")]          # no disease-module or outcome hubs
    # the graph does not change when every risk link between the generator's modules is removed
    monkeypatch.setattr(m, "CONDITIONS", tuple(c.__class__(**{**c.__dict__, "links": ()}) for c in m.CONDITIONS))
    nodes2, adj2 = demo.code_graph(tokens)
    assert nodes2 == nodes and np.array_equal(adj2, adj)
    # a drug's non-hierarchy edges go exactly to the categories it is indicated for
    pos = {n: i for i, n in enumerate(nodes)}
    linked = {nodes[j] for j in np.flatnonzero(adj[pos["atc:C03CA01"]]) if nodes[j].startswith("icd10cm:")}
    assert linked == {f"icd10cm:{c}" for c in clinvec_knowledge.indications("C03CA01")}
    # building it imports neither the planted task nor the simulator
    code = ("import sys, tempfile; from exmed_bert.synthetic.clinvec_demo import build_demo_clinvec; "
            "build_demo_clinvec(tempfile.mkdtemp() + '/d', dim=8); "
            "print(sorted(m for m in sys.modules if m.startswith('exmed_bert.synthetic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "exmed_bert.synthetic.task" not in out and "exmed_bert.synthetic.generator" not in out
