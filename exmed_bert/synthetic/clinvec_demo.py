"""Demo ClinVec embeddings, written as a ClinVec release (node table, vector CSVs, DEMO marker) so the
pipeline runs offline: `build_demo_clinvec` (scripts/build_demo_clinvec.py), and `ensure_demo_release` /
`with_demo_release`: the build when a command asks for ClinVec, with the staleness check `demo_is_current`.

Vectors are a spectral (diffusion-map) embedding of a graph built from knowledge a real clinical graph
also has (`clinvec_knowledge`): the code hierarchies, drug indications and procedure-diagnosis links;
never the generator's risk links or its outcome. The covered codes are `embedding_vocab.demo_codes()`,
which leaves out the generator's novel siblings, so exact matches, parent fallback and random init all
happen. These are NOT the real ClinVec vectors.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from exmed_bert import codes
from exmed_bert.clinvec.release import (DEMO_DIR_NAME, DEMO_MARKER, NODE_TABLE, build_demo_command, demo_dir_for,
                                        has_clinvec_files, vocab_file)
from exmed_bert.errors import UserError
from exmed_bert.io import atomic_write, write_text
from exmed_bert.synthetic import clinvec_knowledge
from exmed_bert.synthetic.embedding_vocab import demo_codes

log = logging.getLogger("exmed_bert.clinvec")
T = TypeVar("T")

DEMO_VERSION = 2          # bump when the graph or embedding recipe changes: stale demos are rebuilt
NTYPE = {"icd10cm": "ICD10CM", "icd9cm": "ICD9CM", "atc": "ATC", "cpt": "CPT", "rxnorm": "RXNORM",
         "phecode": "PHECODE"}  # the release's spelling
INDEX_BASE = 100_000      # node indices are global in the release; never 0..N-1 of one file


def demo_tokens() -> list[str]:
    return sorted(demo_codes())


def demo_fingerprint(dim: int, seed: int, tokens: list[str] | None = None) -> str:
    text = "\n".join([f"version={DEMO_VERSION}", f"dim={dim}", f"seed={seed}", *(tokens or demo_tokens())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_graph(tokens: list[str]) -> tuple[list[str], np.ndarray]:
    """Nodes (the tokens, then group nodes) and a symmetric weighted adjacency (n, n).

    Edges hold only what a real clinical knowledge graph also holds (`clinvec_knowledge`): each code links
    to its nearest present ancestor (ICD-10-CM, ATC) or its CPT range groups; drugs link to the ICD-10-CM
    categories they are indicated for; procedures to the categories they usually test or treat. Nothing
    comes from the synthetic generator's risk links or its planted outcome.
    """
    nodes = list(tokens)
    present = set(tokens)
    edges: list[tuple[str, str, float]] = []
    for tok in tokens:
        system, code = tok.split(":", 1)
        try:
            ancestors = codes.parents(code, system)
        except ValueError:
            ancestors = []
        parent = next((f"{system}:{a}" for a in ancestors if f"{system}:{a}" in present), None)
        if parent is None and system == "cpt":  # CPT is flat: its numeric range groups are the hierarchy
            groups = codes.parents(code, system, include_groups=True)
            for narrow, wide in zip(groups, groups[1:]):
                edges.append((f"cpt-group:{narrow}", f"cpt-group:{wide}", 1.0))
            parent = f"cpt-group:{groups[0]}" if groups else None
        edges.append((tok, parent or f"root:{system}", 1.0 if parent else 0.3))
        if system == "atc":
            targets = clinvec_knowledge.indications(code)
        elif system == "cpt":
            targets = clinvec_knowledge.PROCEDURE_FOR.get(code, ())
        else:
            targets = ()
        edges.extend((tok, f"icd10cm:{category}", 0.5) for category in targets)
    for system in sorted({t.split(":", 1)[0] for t in tokens}):
        edges.append((f"root:{system}", "root", 0.3))

    for a, b, _ in edges:
        for n in (a, b):
            if n not in present:
                present.add(n)
                nodes.append(n)
    pos = {n: i for i, n in enumerate(nodes)}
    adj = np.zeros((len(nodes), len(nodes)))
    for a, b, w in edges:
        adj[pos[a], pos[b]] += w
        adj[pos[b], pos[a]] += w
    return nodes, adj


def spectral_embedding(adj: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Diffusion map (n, dim): D^-1/2 U diag(lambda) over the top non-trivial eigenvectors of the
    normalised adjacency, plus 15% isotropic noise so structurally identical codes still differ.
    Rows are scaled to a mean norm of 1 (like rows of the model's own orthogonal init)."""
    n = adj.shape[0]
    d = adj.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(d, 1e-12))
    s = adj * inv_sqrt[:, None] * inv_sqrt[None, :]          # (n, n), eigenvalues in [-1, 1]
    lam, u = np.linalg.eigh(s)
    order = np.argsort(lam)[::-1][1:dim + 1]                  # drop the trivial top eigenvector
    psi = inv_sqrt[:, None] * u[:, order] * np.clip(lam[order], 0.05, None)  # (n, k), k <= dim
    u_sign = np.sign(psi[np.abs(psi).argmax(axis=0), range(psi.shape[1])])
    psi = psi * u_sign                                        # deterministic eigenvector signs
    if psi.shape[1] < dim:                                    # tiny graphs: fewer eigenvectors than dim
        psi = np.concatenate([psi, np.zeros((n, dim - psi.shape[1]))], axis=1)
    psi /= np.linalg.norm(psi, axis=1).mean() + 1e-12
    rng = np.random.default_rng(seed)
    psi = psi + rng.normal(0.0, 0.15 / np.sqrt(dim), size=psi.shape)
    return (psi / np.linalg.norm(psi, axis=1).mean()).astype(np.float32)


def write_node_table(path: Path, rows: list[tuple[str, str, str, int]]) -> None:
    """TAB-separated node_id, node_name, ntype, node_index, sorted by node_index (like the release)."""
    with atomic_write(path) as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["node_id", "node_name", "ntype", "node_index"])
        w.writerows(sorted(rows, key=lambda r: r[3]))


def write_vector_csv(path: Path, node_index: np.ndarray, vectors: np.ndarray) -> None:
    """pandas `to_csv` layout: an empty first header, value columns named 0..dim-1, node_index first."""
    buf = io.StringIO()
    buf.write("," + ",".join(str(i) for i in range(vectors.shape[1])) + "\n")
    data = np.concatenate([node_index[:, None].astype(np.float64), vectors.astype(np.float64)], axis=1)
    np.savetxt(buf, data, delimiter=",", fmt=["%d"] + ["%.9g"] * vectors.shape[1])
    write_text(path, buf.getvalue())


def build_demo_clinvec(output: str | Path = DEMO_DIR_NAME, dim: int = 128, seed: int = 0) -> Path:
    """Write ClinGraph_nodes.csv + ClinVec_<vocab>.csv (rows in shuffled node_index order) + the marker."""
    output = Path(output)
    if (output / NODE_TABLE).is_file() and not (output / DEMO_MARKER).is_file():
        raise UserError(f"{output}: holds a ClinVec release (no {DEMO_MARKER}); refusing to overwrite it "
                        "with demo files -- choose another --output")
    if dim < 2:
        raise UserError(f"--dim must be at least 2, got {dim}")
    tokens = demo_tokens()
    nodes, adj = code_graph(tokens)
    vectors = spectral_embedding(adj, dim, seed)[: len(tokens)]  # hub nodes are not written
    rng = np.random.default_rng(seed)
    node_index = INDEX_BASE + rng.permutation(len(tokens))       # codes of all systems interleave
    by_system: dict[str, list[int]] = {}
    rows = []
    for i, tok in enumerate(tokens):
        system, code = tok.split(":", 1)
        by_system.setdefault(system, []).append(i)
        try:
            name = codes.describe(code, system) or ""
        except ValueError:
            name = ""
        rows.append((f"{code}:{system}", name, NTYPE.get(system, system.upper()), int(node_index[i])))
    output.mkdir(parents=True, exist_ok=True)
    (output / DEMO_MARKER).unlink(missing_ok=True)  # the marker goes last: no marker = incomplete build
    write_node_table(output / NODE_TABLE, rows)
    for system, ids in sorted(by_system.items()):
        ids = rng.permutation(ids)                               # row order != node_index order
        write_vector_csv(output / vocab_file(system), node_index[ids], vectors[ids])
    write_text(output / DEMO_MARKER, _marker_text(dim, seed, tokens, sorted(by_system)))
    log.info("demo ClinVec: %d codes (%s) x %d written to %s", len(tokens),
             ", ".join(f"{s} {len(v)}" for s, v in sorted(by_system.items())), dim, output)
    return output


def _marker_text(dim: int, seed: int, tokens: list[str], systems: list[str]) -> str:
    return (
        "DEMO ClinVec embeddings -- NOT the real ClinVec release.\n"
        "Built by scripts/build_demo_clinvec.py from code hierarchies, drug indications and procedure-\n"
        "diagnosis links (a spectral embedding of a code graph), in the release's file format, so the pipeline\n"
        "runs offline. For real embeddings see ClinVec/README.md (Harvard Dataverse doi:10.7910/DVN/Z6H1A8).\n"
        f"files={','.join([NODE_TABLE] + [vocab_file(s) for s in systems])}\n"
        f"dim={dim}\nseed={seed}\nfingerprint={demo_fingerprint(dim, seed, tokens)}\n"
    )


def demo_is_current(folder: str | Path) -> bool:
    """True when `folder` holds a complete demo built by this code version (same codes, dim, seed)."""
    marker = Path(folder) / DEMO_MARKER
    if not marker.is_file():
        return False
    fields = dict(line.split("=", 1) for line in marker.read_text(encoding="utf-8").splitlines() if "=" in line)
    try:
        dim, seed = int(fields["dim"]), int(fields["seed"])
    except (KeyError, ValueError):
        return False
    files = fields.get("files", "").split(",")
    return all((Path(folder) / f).is_file() for f in files if f) and fields.get("fingerprint") == demo_fingerprint(dim, seed)


# ---------------------------------------------------------------------------------------------
# the demo release, built when a run asks for ClinVec and has no release


def ensure_demo_release(clinvec_dir: str | Path) -> Path:
    """The folder pretraining will read for `clinvec_dir` (`clinvec.release.resolve_clinvec_dir`): the
    folder itself when it holds ClinVec files; else the demo release beside it, built first when missing
    or stale (what scripts/build_demo_clinvec.py writes). Called by the commands, never by training."""
    if has_clinvec_files(clinvec_dir):
        return Path(clinvec_dir)
    demo = demo_dir_for(clinvec_dir)
    if not demo_is_current(demo):
        print(f"No ClinVec files in {clinvec_dir}/: building DEMO embeddings in {demo}/ "
              f"(`{build_demo_command(clinvec_dir)}`)", file=sys.stderr)
        build_demo_clinvec(demo)
    return demo


def with_demo_release(run: Callable[[Any], T]) -> Callable[[Any], T]:
    """Pretraining's `run(args)` as the commands and the pipeline call it: with `args.use_clinvec` the demo
    release is made ready first (`ensure_demo_release`); `run` itself only reads folders."""
    def run_after_demo(args: Any) -> T:
        if args.use_clinvec:
            ensure_demo_release(args.clinvec_dir)
        return run(args)
    return run_after_demo
