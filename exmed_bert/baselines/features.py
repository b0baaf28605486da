"""Baseline features: sparse CSR matrices over the model's vocabulary, plus age and sex.

Three featurisations (`--features`):
- `counts`: how often each code occurs before the prediction date;
- `windows`: per code, the counts in the last 30, 90 and 365 days and ever, and the days since its
  last occurrence (as EHR tabularisation tools do), so recency and trajectories are visible to trees;
- `windows_order`: `windows`, plus per code the days since its *first* occurrence, plus the order of the
  most frequent drugs relative to the most frequent diagnoses (one column per (drug, diagnosis) pair:
  +1 drug first filled on or after the diagnosis was first coded, -1 before it), so "treatment started
  before its indication" is one split, not a staircase over two day columns.

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
# windows_order's pair block: the ORDER_DRUGS most frequent drug tokens x the ORDER_DIAGNOSES most frequent
# diagnosis tokens of the vocabulary (train-split counts, no labels), so its width is bounded (1,024 columns)
# whatever the code space; a drug's indication is among the common diagnoses it pairs with.
ORDER_DRUGS = 32
ORDER_DIAGNOSES = 32
DIAGNOSIS_SYSTEMS = ("icd10cm", "icd9cm", "phecode")
DRUG_SYSTEMS = ("atc", "rxnorm")
DESCRIPTIONS = {"counts": "code counts + age + sex",
                "windows": "code counts in the last 30/90/365 days and ever + days since each code's last "
                           "occurrence + age + sex",
                "windows_order": "code counts in the last 30/90/365 days and ever + days since each code's last "
                                 "and first occurrence + order of the common drugs relative to the common "
                                 "diagnoses + age + sex"}


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


def _events_before(data: Mapping, vocab_size: int):
    """(rows, code ids, days before the prediction date) of every code event dated strictly before its
    patient's prediction date, and N. Days are >= 1."""
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
    return rows[keep], ids[keep], before[keep], n


def _extreme_days(r: np.ndarray, c: np.ndarray, d: np.ndarray, n: int, vocab_size: int,
                  largest: bool) -> sp.csr_matrix:
    """(N, vocab_size) float32: per (patient, code) the smallest (last occurrence) or largest (first
    occurrence) number of days before the prediction date; absent where the code never occurs."""
    key = r * vocab_size + c
    order = np.lexsort((-d if largest else d, key))
    key, d = key[order], d[order]
    head = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    return sp.csr_matrix((d[head].astype(np.float32), (key[head] // vocab_size, key[head] % vocab_size)),
                         shape=(n, vocab_size))


def windowed_codes(data: Mapping, vocab_size: int) -> sp.csr_matrix:
    """(N, 5 * vocab_size) float32 CSR: per code, counts in the last 30 | 90 | 365 days | ever, then the
    days since its last occurrence (>= 1; an absent entry means never, which XGBoost reads as missing and
    the forest as 0). Only events dated strictly before the patient's prediction date count."""
    r, c, d, n = _events_before(data, vocab_size)
    blocks = []
    for w in (*WINDOWS, None):
        m = np.ones(len(d), dtype=bool) if w is None else d <= w
        blocks.append(sp.csr_matrix((np.ones(int(m.sum()), dtype=np.float32), (r[m], c[m])), shape=(n, vocab_size)))
    out = sp.hstack([*blocks, _extreme_days(r, c, d, n, vocab_size, largest=False)], format="csr")
    out.sum_duplicates()
    return out


def order_pairs(tokens: Sequence[str], counts: Sequence[int], n_drugs: int = ORDER_DRUGS,
                n_diagnoses: int = ORDER_DIAGNOSES) -> tuple[np.ndarray, np.ndarray]:
    """(drug ids (P,), diagnosis ids (Q,)): the vocabulary's most frequent drug and diagnosis tokens (ties
    broken by id), the pairs `windows_order` orders. From the vocabulary alone, so every split gets the
    same columns."""
    def top(systems: tuple[str, ...], k: int) -> np.ndarray:
        ids = [i for i, t in enumerate(tokens) if i >= FIRST_CODE_ID and t.split(":", 1)[0] in systems]
        ids.sort(key=lambda i: (-int(counts[i]), i))
        return np.array(sorted(ids[:k]), dtype=np.int64)

    return top(DRUG_SYSTEMS, n_drugs), top(DIAGNOSIS_SYSTEMS, n_diagnoses)


def order_codes(first: sp.csr_matrix, drugs: np.ndarray, diagnoses: np.ndarray) -> sp.csr_matrix:
    """(N, P * Q) float32 CSR, drug-major: +1 when the drug was first filled on or after the day the diagnosis
    was first coded (treated after it), -1 when before it (e.g. started for another reason), absent when
    either never occurs. first: (N, V) days before the prediction date of each code's first occurrence."""
    Fd = first[:, drugs].toarray()          # (N, P) days before; 0 = never
    Fx = first[:, diagnoses].toarray()      # (N, Q)
    blocks = []
    for j in range(len(drugs)):
        both = (Fd[:, j:j + 1] > 0) & (Fx > 0)                           # (N, Q)
        value = np.where(Fd[:, j:j + 1] <= Fx, 1.0, -1.0).astype(np.float32)  # fewer days before = later
        blocks.append(sp.csr_matrix(np.where(both, value, 0.0).astype(np.float32)))
    n = first.shape[0]
    return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((n, 0), dtype=np.float32)


def windowed_order_codes(data: Mapping, vocab_size: int, pairs: tuple[np.ndarray, np.ndarray]) -> sp.csr_matrix:
    """(N, 6 * vocab_size + P * Q) float32 CSR: `windowed_codes`, then per code the days since its first
    occurrence (>= 1, absent = never), then `order_codes` over `pairs` (from `order_pairs`). Only events
    dated strictly before the prediction date count, so a drug filled on or after it orders nothing."""
    r, c, d, n = _events_before(data, vocab_size)
    first = _extreme_days(r, c, d, n, vocab_size, largest=True)
    return sp.hstack([windowed_codes(data, vocab_size), first, order_codes(first, *pairs)], format="csr")


def featurize(data: Mapping, vocab_size: int, features: str = "counts", *,
              pairs: tuple[np.ndarray, np.ndarray] | None = None) -> sp.csr_matrix:
    """(N, width) float32 CSR: the codes (`counts`: vocab_size columns; `windows`: 5 * vocab_size;
    `windows_order`: 6 * vocab_size + P * Q, with `pairs` from `order_pairs`) | age in years | sex F | sex M.

    An unknown age is a stored NaN: XGBoost treats it as missing and learns where to send it; the
    Random Forest imputes it (see registry._impute_unknown_age), as sklearn's forests take no NaN in
    sparse input.
    """
    if features not in FEATURE_SETS:
        raise ValueError(f"features must be one of {', '.join(FEATURE_SETS)}, got {features!r}")
    sex = _np(data["sex"]).astype(np.int64)
    extra = np.column_stack([age_at_prediction(data), sex == 1, sex == 2]).astype(np.float32)
    if features == "counts":
        codes = code_counts(data, vocab_size)
    elif features == "windows":
        codes = windowed_codes(data, vocab_size)
    else:
        if pairs is None:
            raise ValueError("windows_order needs the vocabulary's (drug, diagnosis) pairs: pass "
                             "pairs=order_pairs(vocab.tokens, vocab.counts)")
        codes = windowed_order_codes(data, vocab_size, pairs)
    return sp.hstack([codes, sp.csr_matrix(extra)], format="csr")


def feature_names(vocab_tokens: Sequence[str], features: str = "counts",
                  pairs: tuple[np.ndarray, np.ndarray] | None = None) -> list[str]:
    if features == "counts":
        return [*vocab_tokens, *EXTRA_FEATURES]
    names = [f"{t} (last {w} d)" for w in WINDOWS for t in vocab_tokens]
    names += [*vocab_tokens, *(f"{t} (days since last)" for t in vocab_tokens)]
    if features == "windows_order":
        if pairs is None:
            raise ValueError("windows_order's names need the (drug, diagnosis) pairs of order_pairs")
        drugs, diagnoses = pairs
        names += [f"{t} (days since first)" for t in vocab_tokens]
        names += [f"{vocab_tokens[a]} after {vocab_tokens[b]} (+1) or before (-1)" for a in drugs for b in diagnoses]
    return [*names, *EXTRA_FEATURES]


def labels_of(data: Mapping, where: str = "dataset") -> np.ndarray:
    if "labels" not in data:
        raise KeyError(f"{where} has no labels; build it with --task-data")
    return _np(data["labels"]).astype(np.int64)
