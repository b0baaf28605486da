"""Baselines with an unknown birth date: the age feature is missing (NaN), not -5.9 million years; RF
fills it with the train median and sees a missing indicator; XGBoost takes the NaN as missing.
"""

import numpy as np
import pytest
import torch

from exmed_bert.baselines import registry
from exmed_bert.baselines.features import featurize
from exmed_bert.data.dataset import UNKNOWN_BIRTH
from test_baselines import quick_args

PRED_DAY = 18262                               # 2020-01-01
V = 12                                          # vocabulary: 5 special tokens + codes 5..11


def dataset(birth_days, labels, seed=0):
    """One [CLS] + 3 random codes + [SEP] per patient; the given birth days (UNKNOWN_BIRTH = none)."""
    rng = np.random.default_rng(seed)
    n = len(birth_days)
    toks = np.concatenate([[2, *rng.integers(5, V, 3), 3] for _ in range(n)])
    return {"input_ids": torch.tensor(toks, dtype=torch.int32), "offsets": torch.arange(0, 5 * n + 1, 5),
            "age_ids": torch.full((5 * n,), 50, dtype=torch.int16), "sex": torch.ones(n, dtype=torch.int8),
            "birth_days": torch.tensor(birth_days, dtype=torch.int32),
            "prediction_days": torch.full((n,), PRED_DAY, dtype=torch.int32), "labels": torch.tensor(labels)}


def test_unknown_birth_date_is_a_missing_age():
    # a hand-built patient without a birth date between two with one
    X = featurize(dataset([PRED_DAY - 18262, UNKNOWN_BIRTH, PRED_DAY - 3652], [1, 0, 1]), V).toarray()
    age = X[:, V]
    assert age[0] == pytest.approx(18262 / 365.25) and age[2] == pytest.approx(3652 / 365.25)
    assert np.isnan(age[1])                     # not (18262 + 2**31) / 365.25 ~ -5.9 million years


@pytest.mark.parametrize("name", registry.NAMES)
def test_estimators_use_the_missingness_and_keep_importances_aligned(name):
    """Labels are exactly "birth date unknown" and codes are noise: each model must score it perfectly,
    which it can only do by seeing the missing age (RF: the indicator; XGBoost: NaN's own branch)."""
    rng = np.random.default_rng(1)
    n = 200
    unknown = rng.random(n) < 0.3
    births = np.where(unknown, UNKNOWN_BIRTH, PRED_DAY - rng.integers(30, 90, n) * 365)
    train = featurize(dataset(births, unknown.astype(int), seed=1), V)
    baseline = registry.get(name)
    model = baseline.build(quick_args(name, "unused", seed=0), None)
    model.fit(train, unknown.astype(int))
    test_births = [UNKNOWN_BIRTH, PRED_DAY - 70 * 365, UNKNOWN_BIRTH, PRED_DAY - 40 * 365]
    p = model.predict_proba(featurize(dataset(test_births, [1, 0, 1, 0], seed=2), V))[:, 1]
    assert min(p[0], p[2]) > 0.5 > 0.25 > max(p[1], p[3])   # prevalence is 0.3: both far from it
    imp = baseline.importances(model)
    assert imp.shape == (V + 3,) and int(np.argmax(imp)) == V  # the age column (its indicator folded in)
    if name == "rf":
        known_ages = (PRED_DAY - births[~unknown]) / 365.25
        assert model.named_steps["impute"].statistics_[V] == pytest.approx(np.median(known_ages), rel=1e-6)
