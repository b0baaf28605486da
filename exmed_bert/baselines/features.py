"""Baseline features: a sparse CSR matrix of code counts over the model's vocabulary, plus age and sex.

Built from the same encoded task datasets as fine-tuning, so each row holds only the events before
that patient's prediction date (the conversion made the cut) - RF, XGBoost and ExMed-BERT see the
same information.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from exmed_bert.data.validate import UNKNOWN_BIRTH  # birth_days of a record without a birth date

# Token ids below this are [PAD] [UNK] [CLS] [SEP] [MASK]; only [UNK] (id 1) carries information.
FIRST_CODE_ID = 5
UNK_ID = 1
EXTRA_FEATURES = ("age_years", "sex_F", "sex_M")
DAYS_PER_YEAR = 365.25


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


def featurize(data: Mapping, vocab_size: int) -> sp.csr_matrix:
    """(N, vocab_size + 3) float32 CSR: code counts | age in years | sex F | sex M.

    An unknown age is a stored NaN: XGBoost treats it as missing and learns where to send it; the
    Random Forest imputes it (see estimators.build_estimator), as sklearn's forests take no NaN in
    sparse input.
    """
    sex = _np(data["sex"]).astype(np.int64)
    extra = np.column_stack([age_at_prediction(data), sex == 1, sex == 2]).astype(np.float32)
    return sp.hstack([code_counts(data, vocab_size), sp.csr_matrix(extra)], format="csr")


def feature_names(vocab_tokens: Sequence[str]) -> list[str]:
    return [*vocab_tokens, *EXTRA_FEATURES]


def labels_of(data: Mapping, where: str = "dataset") -> np.ndarray:
    if "labels" not in data:
        raise KeyError(f"{where} has no labels; build it with --task-data")
    return _np(data["labels"]).astype(np.int64)
