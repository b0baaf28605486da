"""The baselines' time-windowed featurisation (--features windows) on hand-built patients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exmed_bert.baselines.features import WINDOWS, feature_names, featurize, order_pairs

V = 8          # 5 special tokens + codes 5, 6, 7
PRED = 20000   # prediction day of patient 0


def dataset(extra_after=False):
    """Patient 0: code 5 at 10, 60 and 400 days before the prediction date, code 6 at 200 days before;
    patient 1: code 7 once, 1 day before. `extra_after` adds code 7 to patient 0 on and after the date."""
    days0 = [PRED - 400, PRED - 200, PRED - 60, PRED - 10]
    ids0 = [5, 6, 5, 5]
    if extra_after:
        days0 += [PRED, PRED + 30]
        ids0 += [7, 7]
    ids = [2, *ids0, 3, 2, 7, 3]                      # [CLS] codes [SEP] per patient
    days = [days0[0], *days0, days0[-1], PRED + 99, PRED + 99, PRED + 99]
    n0 = len(ids0) + 2
    return {"input_ids": torch.tensor(ids), "days": torch.tensor(days),
            "offsets": torch.tensor([0, n0, n0 + 3]), "prediction_days": torch.tensor([PRED, PRED + 100]),
            "birth_days": torch.tensor([PRED - 365 * 70, PRED - 365 * 40]), "sex": torch.tensor([1, 2]),
            "age_ids": torch.zeros(n0 + 3, dtype=torch.long)}


def table(data):
    X = featurize(data, V, "windows").toarray()
    names = feature_names([f"t{i}" for i in range(V)], "windows")
    assert X.shape == (2, 5 * V + 3) and len(names) == X.shape[1]
    return {name: X[:, j] for j, name in enumerate(names)}


def test_windowed_values_of_a_hand_built_patient():
    f = table(dataset())
    assert WINDOWS == (30, 90, 365)
    # code 5: 10, 60, 400 days before -> last 30 d: 1, last 90 d: 2, last 365 d: 2, ever: 3, last seen 10 d ago
    assert [f[f"t5 (last {w} d)"][0] for w in WINDOWS] == [1, 2, 2]
    assert f["t5"][0] == 3 and f["t5 (days since last)"][0] == 10
    assert [f[f"t6 (last {w} d)"][0] for w in WINDOWS] == [0, 0, 1] and f["t6 (days since last)"][0] == 200
    assert f["t7"][0] == 0 and f["t7 (days since last)"][0] == 0          # never: absent (0 / missing)
    assert f["t7 (last 30 d)"][1] == 1 and f["t7 (days since last)"][1] == 1
    assert f["t2"].sum() == 0 and f["t3"].sum() == 0                        # [CLS] / [SEP] carry nothing
    assert f["age_years"][0] == pytest.approx(70 * 365 / 365.25) and f["sex_F"][0] == 1


def test_no_windowed_feature_reads_past_the_prediction_date():
    """Events on or after the prediction date (which a correct conversion never keeps) change nothing."""
    clean, leaky = table(dataset()), table(dataset(extra_after=True))
    assert clean.keys() == leaky.keys()
    for name in clean:
        np.testing.assert_array_equal(clean[name], leaky[name], err_msg=name)


def test_counts_are_unchanged_and_a_bad_choice_is_refused():
    X = featurize(dataset(), V, "counts").toarray()
    assert X.shape == (2, V + 3) and X[0, 5] == 3 and X[0, 6] == 1
    with pytest.raises(ValueError, match="counts, windows, windows_order"):
        featurize(dataset(), V, "bags")


# windows_order on a hand-built vocabulary: two diagnoses, two drugs, one procedure
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "icd10cm:E11.9", "icd10cm:I48.91", "atc:A10BA02",
          "atc:B01AF01", "cpt:99213"]
DM, AF, MET, DOAC, PROC = 5, 6, 7, 8, 9


def order_dataset(events0, events1, after=()):
    """Two patients, each a list of (code id, days before the prediction date); `after` adds events to
    patient 0 dated on or after the prediction date (days before <= 0)."""
    ids, days, offsets = [], [], [0]
    for events in (list(events0) + list(after), events1):
        ids += [2, *(c for c, _ in events), 3]
        ds = [PRED - b for _, b in events]
        days += [ds[0], *ds, ds[-1]]
        offsets.append(len(ids))
    return {"input_ids": torch.tensor(ids), "days": torch.tensor(days), "offsets": torch.tensor(offsets),
            "prediction_days": torch.tensor([PRED, PRED]), "birth_days": torch.tensor([PRED - 365 * 60] * 2),
            "sex": torch.tensor([1, 2]), "age_ids": torch.zeros(len(ids), dtype=torch.long)}


def order_table(data, counts=(0, 0, 0, 0, 0, 50, 40, 30, 20, 10)):
    pairs = order_pairs(TOKENS, counts)
    X = featurize(data, len(TOKENS), "windows_order", pairs=pairs).toarray()
    names = feature_names(TOKENS, "windows_order", pairs)
    assert X.shape == (2, 6 * len(TOKENS) + 2 * 2 + 3) and len(names) == X.shape[1]
    return {name: X[:, j] for j, name in enumerate(names)}


PAIR = "{} after {} (+1) or before (-1)"


def test_windows_order_says_which_came_first_and_since_when():
    # patient 0: metformin 500 d before, diabetes 300 d before (drug BEFORE its indication), diabetes again
    #            20 d before; AF 100 d before, anticoagulant 100 d before (same day) and 10 d before
    # patient 1: diabetes 400 d before, metformin 200 d before (treated AFTER the diagnosis); no AF
    f = order_table(order_dataset([(MET, 500), (DM, 300), (AF, 100), (DOAC, 100), (DOAC, 10), (DM, 20)],
                                  [(DM, 400), (MET, 200), (PROC, 5)]))
    dm, af, met, doac = TOKENS[DM], TOKENS[AF], TOKENS[MET], TOKENS[DOAC]
    assert list(f[f"{dm} (days since first)"]) == [300, 400] and list(f[f"{dm} (days since last)"]) == [20, 400]
    assert list(f[f"{met} (days since first)"]) == [500, 200]
    assert list(f[PAIR.format(met, dm)]) == [-1, 1]       # before its indication | after it
    assert list(f[PAIR.format(doac, af)]) == [1, 0]       # same day counts as after | no AF: absent
    assert list(f[PAIR.format(met, af)]) == [-1, 0]
    assert list(f[PAIR.format(doac, dm)]) == [1, 0]
    assert f[f"{TOKENS[PROC]} (days since first)"][1] == 5  # every code has first-occurrence days
    # the windows part is unchanged: the same columns as --features windows
    w = featurize(order_dataset([(MET, 500)], [(DM, 1)]), len(TOKENS), "windows").toarray()
    o = featurize(order_dataset([(MET, 500)], [(DM, 1)]), len(TOKENS), "windows_order",
                  pairs=order_pairs(TOKENS, [1] * len(TOKENS))).toarray()
    np.testing.assert_array_equal(w[:, :5 * len(TOKENS)], o[:, :5 * len(TOKENS)])


def test_windows_order_reads_nothing_at_or_after_the_prediction_date():
    """A diabetes code on the prediction date and metformin after it would flip the pair and move
    'days since first' if they were read; they must change nothing."""
    before = [(DM, 300), (AF, 50)]
    clean = order_table(order_dataset(before, [(DM, 3)]))
    leaky = order_table(order_dataset(before, [(DM, 3)], after=[(MET, 0), (DOAC, -30), (DM, 0)]))
    assert clean.keys() == leaky.keys()
    for name in clean:
        np.testing.assert_array_equal(clean[name], leaky[name], err_msg=name)
    assert clean[PAIR.format(TOKENS[MET], TOKENS[DM])][0] == 0


def test_order_pairs_take_the_most_frequent_drugs_and_diagnoses_only():
    drugs, diagnoses = order_pairs(TOKENS, (0, 0, 0, 0, 0, 5, 9, 1, 7, 99), n_drugs=1, n_diagnoses=1)
    assert drugs.tolist() == [DOAC] and diagnoses.tolist() == [AF]   # the procedure is neither
    with pytest.raises(ValueError, match="pairs"):
        featurize(order_dataset([(DM, 1)], [(DM, 1)]), len(TOKENS), "windows_order")


def test_train_xgboost_with_windows_records_its_features_and_the_report_shows_them(tiny_cohort, tiny_data, tmp_path):
    import json

    from exmed_bert.cli.baselines import main_rf, main_xgboost
    from exmed_bert.cli.compare import main as compare

    common = ["--data-dir", str(tiny_data), "--task-data", str(tiny_cohort["task"]), "--n-estimators", "20",
              "--n-bootstrap", "50"]
    assert main_xgboost([*common, "--features", "windows", "--output-dir", str(tmp_path / "xgb")]) == 0
    assert main_rf([*common, "--output-dir", str(tmp_path / "rf")]) == 0
    doc = json.loads((tmp_path / "xgb" / "metrics.json").read_text())
    vocab = len(json.loads((tiny_data / "vocab.json").read_text())["tokens"])
    assert doc["features"] == "windows" and doc["n_features"] == 5 * vocab + 3
    assert compare(["--runs", str(tmp_path / "xgb"), str(tmp_path / "rf"), "--output", str(tmp_path / "r.md"),
                    "--n-bootstrap", "50"]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "days since each code's last occurrence" in text and "| code counts + age + sex |" in text
