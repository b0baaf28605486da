"""Baseline features: sparse CSR matrices over the model's vocabulary, plus age and sex.

Two featurisations (`--features`):
- `counts`: how often each code occurs before the prediction date;
- `windows`: per code, the counts in the last 30, 90 and 365 days and ever, and the days since its
  last occurrence (as EHR tabularisation tools do), so recency and trajectories are visible to trees.

Built from the same encoded task datasets as fine-tuning, so each row holds only the events before
that patient's prediction date (the conversion made the cut; the windows also skip any event dated on
or after it) - RF, XGBoost and ExMed-BERT see the same information.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from exmed_bert.baselines.args import FEATURE_SETS
from exmed_bert.data.dataset import UNKNOWN_BIRTH

# Token ids below this are [PAD] [UNK] [CLS] [SEP] [MASK]; only [UNK] (id 1) carries information.
FIRST_CODE_ID = 5
UNK_ID = 1
EXTRA_FEATURES = ("age_years", "sex_F", "sex_M")
DAYS_PER_YEAR = 365.25
WINDOWS = (30, 90, 365)          # days before the prediction date
DESCRIPTIONS = {"counts": "code counts + age + sex",
                "windows": "code counts in the last 30/90/365 days and ever + days since each code's last "
                           "occurrence + age + sex"}


def _np(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def code_counts(data: Mapping, vocab_size: int) -> sp.csr_matrix:
    """(N, vocab_size) counts of each token per patient; special-token columns stay zero except [UNK]."""
    ids = _np(data["input_ids"]).astype(np.int64)  # [T]
    offsets = _np(data["offsets"]).astype(np.int64)  # [N+1]
    n = len(offsets) - 1
    rows = np.repeat(np.arange(n), np.diff(offsets))
    keep = (ids >= FIRST_CODE_ID) | (ids == UNK_ID)
    if ids.size and int(ids.max()) >= vocab_size:
        raise ValueError(f"token id {int(ids.max())} is outside a vocabulary of {vocab_size}; "
                         "the dataset was encoded with a different vocab.json")
    m = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], ids[keep])),
                      shape=(n, vocab_size))
    m.sum_duplicates()
    return m


def age_at_prediction(data: Mapping) -> np.ndarray:
    """(N,) age in years at the prediction date, or at the last event when there is none; NaN (missing)
    when the birth date is unknown, never the -5.9 million years that the sentinel day would give."""
    offsets = _np(data["offsets"]).astype(np.int64)
    if "prediction_days" in data and "birth_days" in data:
        birth = _np(data["birth_days"]).astype(np.int64)
        age = (_np(data["prediction_days"]).astype(np.float64) - birth) / DAYS_PER_YEAR
        return np.where(birth == UNKNOWN_BIRTH, np.nan, age)
    ages = _np(data["age_ids"]).astype(np.float64)
    last = np.clip(offsets[1:] - 1, 0, max(len(ages) - 1, 0))
    return np.where(np.diff(offsets) > 0, ages[last] if len(ages) else 0.0, np.nan)


def windowed_codes(data: Mapping, vocab_size: int) -> sp.csr_matrix:
    """(N, 5 * vocab_size) float32 CSR: per code, counts in the last 30 | 90 | 365 days | ever, then the
    days since its last occurrence (>= 1; an absent entry means never, which XGBoost reads as missing and
    the forest as 0). Only events dated strictly before the patient's prediction date count."""
    ids = _np(data["input_ids"]).astype(np.int64)
    offsets = _np(data["offsets"]).astype(np.int64)
    n = len(offsets) - 1
    rows = np.repeat(np.arange(n), np.diff(offsets))
    days = _np(data["days"]).astype(np.int64)
    if "prediction_days" in data:
        pred = _np(data["prediction_days"]).astype(np.int64)
    else:  # no prediction date: the day after each patient's last event
        pred = np.zeros(n, dtype=np.int64)
        has = np.diff(offsets) > 0
        pred[has] = days[offsets[1:][has] - 1] + 1
    before = pred[rows] - days                                     # days before the prediction date
    keep = ((ids >= FIRST_CODE_ID) | (ids == UNK_ID)) & (before >= 1)
    if ids.size and int(ids.max()) >= vocab_size:
        raise ValueError(f"token id {int(ids.max())} is outside a vocabulary of {vocab_size}; "
                         "the dataset was encoded with a different vocab.json")
    r, c, d = rows[keep], ids[keep], before[keep]
    blocks = []
    for w in (*WINDOWS, None):
        m = np.ones(len(d), dtype=bool) if w is None else d <= w
        blocks.append(sp.csr_matrix((np.ones(int(m.sum()), dtype=np.float32), (r[m], c[m])), shape=(n, vocab_size)))
    # days since the last occurrence: the smallest `before` per (patient, code)
    key = r * vocab_size + c
    order = np.lexsort((d, key))
    key, d = key[order], d[order]
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    last = sp.csr_matrix((d[first].astype(np.float32), (key[first] // vocab_size, key[first] % vocab_size)),
                         shape=(n, vocab_size))
    out = sp.hstack([*blocks, last], format="csr")
    out.sum_duplicates()
    return out


def featurize(data: Mapping, vocab_size: int, features: str = "counts") -> sp.csr_matrix:
    """(N, width) float32 CSR: the codes (`counts`: vocab_size columns; `windows`: 5 * vocab_size) | age in
    years | sex F | sex M.

    An unknown age is a stored NaN: XGBoost treats it as missing and learns where to send it; the
    Random Forest imputes it (see registry._impute_unknown_age), as sklearn's forests take no NaN in
    sparse input.
    """
    if features not in FEATURE_SETS:
        raise ValueError(f"features must be one of {', '.join(FEATURE_SETS)}, got {features!r}")
    sex = _np(data["sex"]).astype(np.int64)
    extra = np.column_stack([age_at_prediction(data), sex == 1, sex == 2]).astype(np.float32)
    codes = code_counts(data, vocab_size) if features == "counts" else windowed_codes(data, vocab_size)
    return sp.hstack([codes, sp.csr_matrix(extra)], format="csr")


def feature_names(vocab_tokens: Sequence[str], features: str = "counts") -> list[str]:
    if features == "counts":
        return [*vocab_tokens, *EXTRA_FEATURES]
    names = [f"{t} (last {w} d)" for w in WINDOWS for t in vocab_tokens]
    return [*names, *vocab_tokens, *(f"{t} (days since last)" for t in vocab_tokens), *EXTRA_FEATURES]


def labels_of(data: Mapping, where: str = "dataset") -> np.ndarray:
    if "labels" not in data:
        raise KeyError(f"{where} has no labels; build it with --task-data")
    return _np(data["labels"]).astype(np.int64)
