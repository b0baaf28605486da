"""The label-efficiency protocol (EHRSHOT's): which generated patients pretrain, which are labelled, which
test; the nested, class-balanced k-subsets; results.json and the AUROC-against-k plot.

Pure functions over ids and labels (no model, no files) except `write_results`, so tests check the draw
directly. `benchmarks/label_efficiency.py` runs the arms over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from exmed_bert.data.splits import split_of
from exmed_bert.errors import UserError
from exmed_bert.evaluation import metrics as M
from exmed_bert.io import write_json, write_text

ARMS = ("bert_finetune", "bert_probe", "bert_scratch", "logreg_counts", "rf_counts", "xgb_counts",
        "logreg_windows", "rf_windows", "xgb_windows")
ALL = "all"  # k: every labelled patient of the pool, unbalanced


def parse_ks(text: str) -> list[str]:
    """'16,32,all' -> ['16', '32', 'all'] (ascending, 'all' last); a k below 1 or not a number is refused."""
    ks = [t.strip() for t in text.split(",") if t.strip()]
    bad = [k for k in ks if k != ALL and not (k.isdigit() and int(k) >= 1)]
    if not ks or bad:
        raise UserError(f"--k takes labels per class as positive integers or 'all', comma-separated; got {text!r}")
    nums = sorted({int(k) for k in ks if k != ALL})
    return [str(k) for k in nums] + ([ALL] if ALL in ks else [])


@dataclass(frozen=True)
class Pools:
    """Who is who, decided by the conversion's split hash (seed, train_ratio): `pretrain` patients are the
    conversion's train split (pretraining learns from them; the labelled k-subsets are drawn from them),
    `val` its val split (the validation sets), `test` its test split. No test or val patient is in train."""

    pretrain: list[str]
    val: list[str]
    test: list[str]
    seed: int
    train_ratio: float


# The hash's train share, the same for every run: the val and test pools are then the same patients (the first
# --val-patients / --test-patients of their hash bands, in generation order) whatever --pretrain-patients is, so
# two pretraining cohort sizes test the same patients. The default pools (20,000 / 3,000 / 2,000) fill it exactly.
TRAIN_SHARE = Fraction(10, 13)


def canonical_id(patient_id: str) -> str:
    """The generator's id without its width: it pads ids to the digits of its cohort size (P0042 of 1,000
    patients, P000042 of 100,000), and the split hash reads the id, so the benchmark renames every patient to
    at least five digits (P00042) before pooling and converting: patient 42 is then the same id, and lands in
    the same pool, whatever --pretrain-patients is."""
    return f"P{int(patient_id[1:]):05d}"


def patients_to_generate(n_pretrain: int, n_val: int, n_test: int) -> int:
    """Enough generated patients that every pool fills at TRAIN_SHARE (10% over the expected need, plus 50)."""
    need = max(n_pretrain / TRAIN_SHARE, 2 * max(n_val, n_test) / (1 - TRAIN_SHARE))
    return int(math.ceil(float(need) * 1.1)) + 50


def assign_pools(ids: Sequence[str], n_pretrain: int, n_val: int, n_test: int, seed: int) -> Pools:
    """Walk the generated ids in order and keep the first n_pretrain / n_val / n_test of each hash split
    (seed, TRAIN_SHARE); the rest are left out of every file. Raises when a pool cannot fill."""
    ratio = float(TRAIN_SHARE)
    want = {"train": n_pretrain, "val": n_val, "test": n_test}
    got: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for pid in ids:
        s = split_of(pid, seed, ratio)
        if len(got[s]) < want[s]:
            got[s].append(pid)
    short = [f"{s} {len(got[s])} of {want[s]}" for s in got if len(got[s]) < want[s]]
    if short:
        raise UserError(f"{len(ids)} generated patients do not fill the pools ({', '.join(short)}); generate more")
    return Pools(got["train"], got["val"], got["test"], seed, ratio)


def draw_subsets(labels: np.ndarray, ks: Sequence[str], seed: int, replicate: int, where: str,
                 stream: int = 0) -> dict[str, np.ndarray]:
    """{k: row indices into `labels`} for one replicate: per class, one seeded permutation of its rows,
    and k takes its first k of each class, so the subsets are balanced, nested (each holds every smaller
    one) and fixed by (seed, replicate, stream: 0 labelled, 1 validation). 'all' is every row. Raises when
    a class has fewer than k rows."""
    labels = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng([seed, replicate, stream])
    order = {c: rng.permutation(np.flatnonzero(labels == c)) for c in (0, 1)}
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k == ALL:
            out[k] = np.arange(len(labels))
            continue
        short = [f"class {c} has {len(order[c])}" for c in (0, 1) if len(order[c]) < int(k)]
        if short:
            raise UserError(f"k={k} labels per class: the {where} pool is too small ({', '.join(short)}); "
                            "use more patients or drop that k")
        out[k] = np.sort(np.concatenate([order[0][: int(k)], order[1][: int(k)]]))
    return out


def finetune_epochs(n_train: int, batch_size: int, epochs: float, max_steps: int) -> float:
    """Epochs for one fine-tuning run: `epochs`, fewer when they would pass `max_steps` updates, never below
    one whole epoch (so the 'all' runs, ~620 updates an epoch at 20,000 patients, stay bounded)."""
    per_epoch = math.ceil(n_train / batch_size)
    return min(epochs, max(1, max_steps // per_epoch))


def auroc_auprc(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Test AUROC and AUPRC by the project's one implementation (evaluation.metrics), as every run's
    metrics.json has them."""
    return M.headline_metric("auroc", y, p), M.headline_metric("auprc", y, p)


def results_doc(oracle: float, n_test: int, auroc: Mapping[str, Mapping[str, list]],
                auprc: Mapping[str, Mapping[str, list]], wall_s: Mapping[str, float], settings: dict) -> dict:
    """results.json: {"oracle", "n_test", "arms": {arm: {k: [AUROC per replicate]}}, "auprc": same shape,
    "wall_s": {piece: seconds}, "settings"}."""
    return {"oracle": float(oracle), "n_test": int(n_test),
            "arms": {a: {k: [float(v) for v in vs] for k, vs in ks.items()} for a, ks in auroc.items()},
            "auprc": {a: {k: [float(v) for v in vs] for k, vs in ks.items()} for a, ks in auprc.items()},
            "wall_s": {k: round(float(v), 1) for k, v in wall_s.items()}, "settings": settings}


def mean_band(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95% band (t interval over replicates; zero width for one)."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    from scipy.stats import t

    half = float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - half, m + half


def paired_gap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of a - b over replicates that share their k-subset (replicate r of every arm draws
    the same patients), the 95% t band of the paired differences."""
    if len(a) != len(b):
        raise ValueError(f"paired replicates differ in number: {len(a)} and {len(b)}")
    return mean_band(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))


def best_tabular(doc: dict, k: str) -> str | None:
    """The non-BERT arm of highest mean AUROC at k; None when none ran at k."""
    ran = {arm: vs[k] for arm, vs in doc["arms"].items() if not arm.startswith("bert") and vs.get(k)}
    return max(ran, key=lambda arm: float(np.mean(ran[arm]))) if ran else None


def markdown_table(doc: dict) -> str:
    """AUROC mean [95% band] per arm (rows) and k (columns), the oracle, then each pretrained arm's paired gap
    to the best tabular arm at that k and to bert_scratch: the table docs/EVALUATION.md shows."""
    ks = sorted({k for vs in doc["arms"].values() for k in vs if vs[k]},
                key=lambda k: (k == ALL, int(k) if k != ALL else 0))
    lines = ["| arm | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for arm, vs in doc["arms"].items():
        cells = ["{:.3f} [{:.3f}, {:.3f}]".format(*mean_band(vs[k])) if vs.get(k) else "" for k in ks]
        lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    lines.append("| oracle | " + " | ".join(f"{doc['oracle']:.3f}" for _ in ks) + " |")
    for bert in ("bert_finetune", "bert_probe"):
        for rival in ("best tabular", "bert_scratch"):
            cells = []
            for k in ks:
                other = best_tabular(doc, k) if rival == "best tabular" else rival
                mine, theirs = doc["arms"].get(bert, {}).get(k), doc["arms"].get(other or "", {}).get(k)
                cell = "{:+.3f} [{:+.3f}, {:+.3f}]".format(*paired_gap(mine, theirs)) if mine and theirs else ""
                cells.append(cell + (f" vs `{other}`" if cell and rival == "best tabular" else ""))
            if any(cells):
                lines.append(f"| `{bert}` − {rival} (paired) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(doc: dict, path: str | Path, title: str = "") -> None:
    """AUROC against k (labels per class, log scale; 'all' at the right end): mean and 95% band per arm,
    the oracle as a dashed line."""
    plot_runs([(None, doc)], path, title)


def plot_runs(runs: Sequence[tuple[str | None, dict]], path: str | Path, title: str = "",
              arms: Sequence[str] | None = None) -> None:
    """`plot_curves` for one or more runs on one set of axes: each (name, results.json) run's arms (or only
    `arms`) as mean and 95% band against k, the run's name in the legend and its own line style; the
    oracle as a dotted line (one per run when their test patients differ)."""
    from exmed_bert.evaluation.plots import plt, save_figure  # pyplot on the Agg backend

    keep = [(name, {a: v for a, v in doc["arms"].items() if arms is None or a in arms}, doc) for name, doc in runs]
    ks = sorted({k for _, by_arm, _ in keep for arm in by_arm.values() for k in arm},
                key=lambda k: (k == ALL, int(k) if k != ALL else 0))
    nums = [int(k) for k in ks if k != ALL]
    x_of = {k: (int(k) if k != ALL else (max(nums) * 2 if nums else 1)) for k in ks}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors: dict[str, str] = {}
    styles = ("-", "--", "-.", ":")
    for i, (name, by_arm, doc) in enumerate(keep):
        for arm, by_k in by_arm.items():
            kk = [k for k in ks if by_k.get(k)]
            if not kk:
                continue
            stats = [mean_band(by_k[k]) for k in kk]
            x = [x_of[k] for k in kk]
            style = styles[i % len(styles)] if name else ("-" if arm.startswith("bert") else "--")
            line, = ax.plot(x, [s[0] for s in stats], style, marker="o", ms=3, color=colors.get(arm),
                            label=f"{arm} ({name})" if name else arm)
            colors.setdefault(arm, line.get_color())
            ax.fill_between(x, [s[1] for s in stats], [s[2] for s in stats], color=line.get_color(), alpha=0.15)
    oracles = {round(doc["oracle"], 6) for _, _, doc in keep}
    for name, _, doc in keep[:1] if len(oracles) == 1 else keep:   # one line when the runs share test patients
        ax.axhline(doc["oracle"], color="k", ls=":", lw=1.5 if len(oracles) == 1 else 1,
                   label=f"oracle {doc['oracle']:.3f}" + (f" ({name})" if name and len(oracles) > 1 else ""))
    ax.set_xscale("log", base=2)
    ax.set_xticks([x_of[k] for k in ks], ks)
    ax.set_xlabel("labelled patients per class (k)")
    ax.set_ylabel("test AUROC (n = " + ", ".join(sorted({f"{doc['n_test']:,}" for _, _, doc in keep})) + ")")
    ax.set_title(title or "Label efficiency")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    save_figure(fig, path)


def write_results(out_dir: str | Path, doc: dict, title: str = "") -> None:
    """results.json, table.md (`markdown_table`) and auroc_vs_k.png in out_dir."""
    write_json(Path(out_dir) / "results.json", doc)
    write_text(Path(out_dir) / "table.md", markdown_table(doc))
    plot_curves(doc, Path(out_dir) / "auroc_vs_k.png", title)


# the settings that decide who is generated, pooled, tested and drawn: two runs compare replicate by replicate
# only when these agree
SAME_PATIENTS = ("task", "seed", "pretrain_patients", "val_patients", "test_patients", "k", "replicates")


def compare_runs(a: dict, b: dict, names: tuple[str, str] = ("A", "B"), arms: Sequence[str] | None = None) -> str:
    """Markdown: each arm's AUROC in run `a` and run `b` and the paired difference a − b per k, for two
    results.json documents over the same patients and k-subsets (an ablation: one setting changed, such as the
    time encoding). Refuses runs whose patients or draws differ, naming the setting."""
    sa, sb = a.get("settings", {}), b.get("settings", {})
    for key in SAME_PATIENTS:
        if sa.get(key) != sb.get(key):
            raise UserError(f"the two runs differ in {key} ({sa.get(key)!r} against {sb.get(key)!r}), so their "
                            "replicates are not the same patients; compare runs of one seed and protocol")
    if a["n_test"] != b["n_test"] or not math.isclose(a["oracle"], b["oracle"], abs_tol=1e-9):
        raise UserError("the two runs tested different patients (their test oracles differ)")
    shared = [arm for arm in (arms or a["arms"]) if arm in a["arms"] and arm in b["arms"]]
    if not shared:
        raise UserError("the two runs share no arm" + (f" among {', '.join(arms)}" if arms else ""))
    ks = sorted({k for arm in shared for k in a["arms"][arm] if a["arms"][arm][k] and b["arms"][arm].get(k)},
                key=lambda k: (k == ALL, int(k) if k != ALL else 0))
    lines = ["| arm | run | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 2) + "|"]
    for arm in shared:
        for name, doc in zip(names, (a, b)):
            cells = ["{:.3f} [{:.3f}, {:.3f}]".format(*mean_band(doc["arms"][arm][k])) for k in ks]
            lines.append(f"| `{arm}` | {name} | " + " | ".join(cells) + " |")
        cells = ["{:+.3f} [{:+.3f}, {:+.3f}]".format(*paired_gap(a["arms"][arm][k], b["arms"][arm][k])) for k in ks]
        lines.append(f"| `{arm}` | {names[0]} − {names[1]} (paired) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
