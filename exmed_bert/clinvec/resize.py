"""Bring ClinVec's 128-d vectors to the model's code-table width (`--resize-method`).

`Resizer(method, out_dim).fit(all_loaded_vectors).transform(rows)`; fitting sees every loaded vector so
PCA axes and padding statistics describe the whole release, not just the codes in this vocabulary.
When the widths are equal every method is the identity, so hidden 128 gives the ClinVec rows exactly.
"""

from __future__ import annotations

import numpy as np

from exmed_bert.clinvec.release import DIM
from exmed_bert.errors import UserError

METHODS = ("auto", "truncate", "pca", "pad_random", "pad_smart", "learned_projection")


def resolve_method(method: str, hidden_size: int, dim: int = DIM) -> str:
    """The method actually applied, decided once per model (pretraining stores it in config.json as
    `clinvec_resize_method`). `auto`: equal -> identity; smaller -> pca; larger -> pad_smart.

    Why: PCA keeps the directions of largest variance, whereas truncate drops arbitrary dimensions.
    For a larger model, pad_smart keeps the 128 ClinVec values verbatim and leaves the architecture a
    plain BERT embedding table (no extra projection to save, fine-tune or explain), while the padded
    dimensions still carry code similarity rather than noise. `learned_projection` stays available.
    """
    if method not in METHODS:
        raise UserError(f"--resize-method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "learned_projection":
        return method
    if hidden_size == dim:
        return "identity"
    if method == "auto":
        return "pca" if hidden_size < dim else "pad_smart"
    if method == "truncate" and hidden_size > dim:
        raise UserError(f"--resize-method truncate cannot grow {dim} -> {hidden_size} dimensions; use "
                        "pad_smart, pad_random, pca, learned_projection or auto")
    if method in ("pad_random", "pad_smart") and hidden_size < dim:
        raise UserError(f"--resize-method {method} cannot shrink {dim} -> {hidden_size} dimensions; use "
                        "truncate, pca or auto")
    return method


class Resizer:
    """Fit on all loaded vectors (N, dim), then map any rows (M, dim) -> (M, out_dim)."""

    def __init__(self, method: str, out_dim: int, seed: int = 0):
        self.method = method
        self.out_dim = out_dim
        self.seed = seed

    def fit(self, vectors: np.ndarray) -> "Resizer":
        x = np.asarray(vectors, dtype=np.float64)
        self.dim_ = x.shape[1]
        self.mean_ = x.mean(axis=0)                          # (dim,)
        self.std_ = x.std(axis=0) + 1e-12                    # (dim,)
        if self.method == "pca":
            # Principal axes from the (dim, dim) covariance: cheap even for the full release.
            cov = np.cov(x - self.mean_, rowvar=False).reshape(self.dim_, self.dim_)
            eigvals, eigvecs = np.linalg.eigh(cov)
            order = np.argsort(eigvals)[::-1]
            self.components_ = eigvecs[:, order]             # (dim, dim), columns by variance
            self.sign_ = np.sign(self.components_[np.abs(self.components_).argmax(axis=0), range(self.dim_)])
            self.components_ = self.components_ * self.sign_  # deterministic signs
            scores = (x - self.mean_) @ self.components_
            self.score_mean_, self.score_std_ = scores.mean(axis=0), scores.std(axis=0) + 1e-12
        extra = max(0, self.out_dim - self.dim_)
        rng = np.random.default_rng(self.seed)
        # pad_smart: each extra dimension is a fixed random mix of the real ones, rescaled to the typical
        # per-dimension mean and std, so similar codes stay similar in the padding too.
        self.mix_ = rng.standard_normal((self.dim_, extra)) / np.sqrt(self.dim_)  # (dim, extra)
        return self

    def transform(self, rows: np.ndarray) -> np.ndarray:
        x = np.asarray(rows, dtype=np.float64)
        out_dim, dim, m = self.out_dim, self.dim_, self.method
        if m == "identity" or out_dim == dim:
            return x.astype(np.float32)
        if m == "truncate":
            return x[:, :out_dim].astype(np.float32)
        if m == "pca":
            scores = (x - self.mean_) @ self.components_    # (M, dim)
            if out_dim <= dim:
                return scores[:, :out_dim].astype(np.float32)
            return self._pad(scores, self.score_mean_, self.score_std_, smart=True)
        if m in ("pad_random", "pad_smart"):
            return self._pad(x, self.mean_, self.std_, smart=m == "pad_smart")
        raise ValueError(f"Resizer cannot apply {m!r}")

    def _pad(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray, smart: bool) -> np.ndarray:
        extra = self.out_dim - x.shape[1]
        if smart:
            z = ((x - mean) / std) @ self.mix_               # (M, extra), ~unit variance
            pad = z * std.mean() + mean.mean()
        else:
            # pad_random: noise at the release's overall scale (typical per-dimension mean and std).
            rng = np.random.default_rng(self.seed + 1)
            pad = rng.normal(mean.mean(), std.mean(), size=(x.shape[0], extra))
        return np.concatenate([x, pad], axis=1).astype(np.float32)
