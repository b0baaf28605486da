"""PNG plots of predictions: ROC, precision-recall, calibration, and top features.

Each function takes {model name: (labels, probabilities)} so one model or several share one figure,
and writes the PNG atomically.
"""

from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from exmed_bert.io import atomic_write  # noqa: E402

Curves = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _figure(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (5.5, 5.0)):
    fig, ax = plt.subplots(figsize=size)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def save_figure(fig, path: str | os.PathLike) -> None:
    """Lay out, render to PNG and write atomically; closes the figure."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def plot_roc(curves: Curves, path: str | os.PathLike, title: str = "ROC curve") -> None:
    fig, ax = _figure(title, "False positive rate", "True positive rate")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    for name, (y, p) in curves.items():
        if not _both_classes(y):
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUROC {roc_auc_score(y, p):.3f})")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def plot_pr(curves: Curves, path: str | os.PathLike, title: str = "Precision-recall curve") -> None:
    fig, ax = _figure(title, "Recall", "Precision")
    for name, (y, p) in curves.items():
        if not _both_classes(y):
            continue
        precision, recall, _ = precision_recall_curve(y, p)
        ax.step(recall, precision, where="post", lw=1.5,
                label=f"{name} (AP {average_precision_score(y, p):.3f})")
        ax.axhline(float(np.mean(y)), color="grey", lw=0.6, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    else:  # a one-class test split has no precision-recall curve to draw
        ax.text(0.5, 0.5, "test split has a single class:\nno curve", ha="center", va="center")
    save_figure(fig, path)


def calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins: (mean predicted, observed rate, count) for the non-empty bins."""
    bins = np.clip((np.asarray(p) * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    mean_p = np.bincount(bins, weights=p, minlength=n_bins)
    rate = np.bincount(bins, weights=y, minlength=n_bins)
    keep = count > 0
    return mean_p[keep] / count[keep], rate[keep] / count[keep], count[keep]


def plot_calibration(curves: Curves, path: str | os.PathLike, title: str = "Calibration") -> None:
    fig, ax = _figure(title, "Mean predicted probability", "Observed positive rate")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    for name, (y, p) in curves.items():
        mean_p, rate, _ = calibration_bins(np.asarray(y, float), np.asarray(p, float))
        ax.plot(mean_p, rate, "o-", ms=4, lw=1.2, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


def plot_top_features(labels: Sequence[str], values: Sequence[float], path: str | os.PathLike,
                      title: str = "Top features") -> None:
    """Horizontal bars, largest at the top."""
    fig, ax = _figure(title, "Importance", "", size=(8.0, 0.3 * len(labels) + 1.2))
    ax.barh(range(len(labels))[::-1], values)
    ax.set_yticks(range(len(labels))[::-1])
    ax.set_yticklabels([s if len(s) <= 60 else s[:57] + "..." for s in labels], fontsize=7)
    save_figure(fig, path)
