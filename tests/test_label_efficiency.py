"""The label-efficiency protocol: pools, nested balanced k-subsets, and results.json of a tiny run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from exmed_bert.data.splits import split_of
from exmed_bert.errors import UserError
from exmed_bert.evaluation.label_efficiency import (ARMS, assign_pools, draw_subsets, finetune_epochs,
                                                    markdown_table, paired_gap, parse_ks, patients_to_generate)

ROOT = Path(__file__).resolve().parents[1]


def labels(n=400, seed=0):
    return (np.random.default_rng(seed).random(n) < 0.2).astype(np.int64)


def test_k_subsets_are_balanced_nested_and_deterministic():
    y = labels()
    ks = parse_ks("64,8,all,16")
    assert ks == ["8", "16", "64", "all"]
    a, b = draw_subsets(y, ks, 7, 0, "labelled"), draw_subsets(y, ks, 7, 0, "labelled")
    other = draw_subsets(y, ks, 7, 1, "labelled")
    for k in ("8", "16", "64"):
        np.testing.assert_array_equal(a[k], b[k])                              # same seed, same draw
        assert np.bincount(y[a[k]], minlength=2).tolist() == [int(k), int(k)]  # balanced
        assert len(set(a[k].tolist())) == 2 * int(k)
    assert set(a["8"]) < set(a["16"]) < set(a["64"]) < set(a["all"])          # nested
    assert len(a["all"]) == len(y)
    assert set(other["64"]) != set(a["64"])                                    # replicates differ
    with pytest.raises(UserError, match="k=100 .*class 1 has"):
        draw_subsets(y, ["100"], 7, 0, "labelled")
    with pytest.raises(UserError, match="--k"):
        parse_ks("16,0")


def test_pools_hold_no_test_patient_in_pretraining_and_match_the_conversion_split():
    ids = [f"P{i:06d}" for i in range(patients_to_generate(500, 120, 100))]
    pools = assign_pools(ids, 500, 120, 100, seed=3)
    assert (len(pools.pretrain), len(pools.val), len(pools.test)) == (500, 120, 100)
    pre, val, test = set(pools.pretrain), set(pools.val), set(pools.test)
    assert not (pre & test) and not (pre & val) and not (val & test)
    # the conversion re-derives each patient's split from (seed, ratio): test patients land in test, never train
    assert all(split_of(p, 3, pools.train_ratio) == "test" for p in pools.test)
    assert all(split_of(p, 3, pools.train_ratio) == "train" for p in pools.pretrain)
    assert assign_pools(ids, 500, 120, 100, seed=3) == pools                   # fixed per seed
    # ... and whatever the pretraining cohort's size: a larger cohort tests and validates on the same patients
    more = [f"P{i:06d}" for i in range(patients_to_generate(2000, 120, 100))]
    bigger = assign_pools(more, 2000, 120, 100, seed=3)
    assert (bigger.test, bigger.val) == (pools.test, pools.val) and bigger.pretrain[:500] == pools.pretrain
    assert assign_pools(ids, 500, 120, 100, seed=4).test != pools.test
    with pytest.raises(UserError, match="do not fill"):
        assign_pools(ids[:300], 500, 120, 100, seed=3)


def test_validation_sets_come_from_their_own_pool_and_differ_from_the_training_draw():
    y_train, y_val = labels(300, 1), labels(200, 2)
    tr = draw_subsets(y_train, ["8"], 5, 0, "labelled")
    va = draw_subsets(y_val, ["8"], 5, 0, "validation", stream=1)
    same_stream = draw_subsets(y_val, ["8"], 5, 0, "validation", stream=0)
    assert np.bincount(y_val[va["8"]]).tolist() == [8, 8]
    assert not np.array_equal(va["8"], same_stream["8"])


def test_fine_tuning_epochs_shrink_only_past_the_update_cap():
    assert finetune_epochs(512, 32, 5.0, 200) == 5.0     # 16 updates an epoch: 80 updates, under the cap
    assert finetune_epochs(4954, 32, 5.0, 200) == 1      # 155 an epoch: one epoch, never less
    assert finetune_epochs(2000, 32, 5.0, 200) == 3      # 63 an epoch: 3 whole epochs fit in 200
    assert finetune_epochs(32, 32, 2.5, 200) == 2.5      # the flag's fractional epochs pass through


def test_paired_gaps_compare_replicates_that_share_their_subset():
    # b trails a by exactly 0.02 in every replicate: the paired band is a point, the unpaired ones overlap
    a, b = [0.60, 0.70, 0.80], [0.58, 0.68, 0.78]
    mean, low, high = paired_gap(a, b)
    assert mean == pytest.approx(0.02) and low == pytest.approx(0.02) and high == pytest.approx(0.02)
    with pytest.raises(ValueError):
        paired_gap(a, b[:2])
    doc = {"oracle": 0.9, "n_test": 10, "arms": {
        "bert_finetune": {"16": a, "all": [0.85]}, "bert_scratch": {"16": [0.5, 0.5, 0.5], "all": [0.8]},
        "rf_counts": {"16": b, "all": [0.86]}, "logreg_counts": {"16": [0.4, 0.4, 0.4], "all": [0.9]}}}
    rows = {line.split(" | ")[0]: line for line in markdown_table(doc).splitlines()}
    assert "| k=16 | k=all |" in rows["| arm"]
    assert "0.700 [" in rows["| `bert_finetune`"] and "| 0.850 [0.850, 0.850] |" in rows["| `bert_finetune`"]
    # the best tabular arm is chosen per k: rf at 16, logistic regression with all labels
    gap = rows["| `bert_finetune` − best tabular (paired)"]
    assert "+0.020 [+0.020, +0.020] vs `rf_counts`" in gap and "-0.050 [-0.050, -0.050] vs `logreg_counts`" in gap
    assert "+0.200 [" in rows["| `bert_finetune` − bert_scratch (paired)"]
    assert not any(r.startswith("| `bert_probe`") for r in rows)                # an arm that did not run has no row


def load_bench():
    spec = importlib.util.spec_from_file_location("label_efficiency_bench", ROOT / "benchmarks" / "label_efficiency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_tiny_run_writes_results_of_the_promised_shape(tmp_path):
    bench = load_bench()
    arms = ["bert_probe", "logreg_counts", "xgb_windows"]
    assert bench.main(["--task", "hf", "--pretrain-patients", "240", "--test-patients", "80", "--val-patients", "120",
                       "--k", "4,8,all", "--replicates", "2", "--arms", ",".join(arms), "--trees", "10",
                       "--pretrain-steps", "5", "--seed", "11", "--time2vec", "--pooling", "mean",
                       "--clinvec-dir", str(tmp_path / "ClinVec"), "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(doc) >= {"oracle", "n_test", "arms", "auprc", "wall_s"} and 0.5 < doc["oracle"] <= 1
    assert doc["n_test"] == 80 and set(doc["arms"]) == set(arms) == set(doc["auprc"])
    for arm in arms:
        assert {k: len(v) for k, v in doc["arms"][arm].items()} == {"4": 2, "8": 2, "all": 1}
        assert all(0 <= v <= 1 for vs in doc["arms"][arm].values() for v in vs)
    assert (tmp_path / "auroc_vs_k.png").stat().st_size > 1000
    assert "| `bert_probe` − best tabular (paired) |" in (tmp_path / "table.md").read_text()
    # the probe read one embedding per labelled patient, written by embed-patients (MEDS int64 subject ids)
    emb = pq.read_table(tmp_path / "embeddings.parquet")
    assert emb.schema.field("subject_id").type == "int64" and emb.num_rows >= 80 + 2 * 8
    # the conversion put no test patient into the split pretraining learns from
    from exmed_bert.data.dataset import PatientDataset

    train = set(PatientDataset.load(tmp_path / "data" / "synthetic_train.pt").patient_ids)
    test = set(PatientDataset.load(tmp_path / "data" / "synthetic_task_test.pt").patient_ids)
    assert test and not (train & test)
    # the model settings reached pretraining (the probe embeds with the model they made)
    config = json.loads((tmp_path / "pretrained" / "checkpoint-best" / "config.json").read_text())
    assert config["time2vec"] is True and config["plos_pooling"] == "mean"
    assert config["clinvec_resize_method"] and (tmp_path / "ClinVec_demo").is_dir()   # started from ClinVec
    assert set(ARMS) >= set(arms) and bench.main(["--arms", "svm", "--out", str(tmp_path)]) == 2


def test_an_ablation_compares_two_runs_replicate_by_replicate(tmp_path):
    from exmed_bert.evaluation.label_efficiency import compare_runs

    settings = {"task": "trajectory", "seed": 7, "pretrain_patients": 100, "val_patients": 50, "test_patients": 40,
                "k": ["16", "all"], "replicates": 3, "time2vec": True}
    a = {"oracle": 0.8, "n_test": 40, "settings": settings,
         "arms": {"bert_finetune": {"16": [0.70, 0.72, 0.74], "all": [0.78]}, "rf_counts": {"16": [0.7] * 3}}}
    b = {"oracle": 0.8, "n_test": 40, "settings": dict(settings, time2vec=False),
         "arms": {"bert_finetune": {"16": [0.66, 0.69, 0.71], "all": [0.77]}}}
    rows = compare_runs(a, b, ("time2vec", "none")).splitlines()
    assert rows[0] == "| arm | run | k=16 | k=all |"
    diff = next(r for r in rows if "time2vec − none (paired)" in r)
    assert "+0.033 [" in diff and "| +0.010 [+0.010, +0.010] |" in diff
    assert not any("rf_counts" in r for r in rows)                    # only arms both runs have
    for key, value in (("seed", 8), ("k", ["16"]), ("replicates", 5)):  # other patients or draws: refused
        with pytest.raises(UserError, match=key):
            compare_runs(a, dict(b, settings=dict(settings, **{key: value})))
    with pytest.raises(UserError, match="oracle"):
        compare_runs(a, dict(b, oracle=0.81))
    # the script: reads two --out folders, prints and writes the table; a missing folder is one line, exit 2
    for name, doc in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(doc))
    spec = importlib.util.spec_from_file_location("le_compare", ROOT / "benchmarks" / "label_efficiency_compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--names", "t2v,off", "--out",
                     str(tmp_path / "t.md")]) == 0
    assert "| `bert_finetune` | t2v − off (paired) |" in (tmp_path / "t.md").read_text()
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 2
    # runs over other patients (two cohort sizes): no paired table, but both drawn on one figure
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text(json.dumps(dict(b, settings=dict(settings, pretrain_patients=500))))
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "c"), "--plot-only"]) == 2         # --plot is missing
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "c"), "--plot-only", "--plot", str(tmp_path / "p.png"),
                     "--names", "500,100"]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    three = [str(tmp_path / x) for x in "abc"]
    assert mod.main(three) == 2 and mod.main([three[0]]) == 2                  # a paired table takes two runs
    assert mod.main(three + ["--plot-only", "--plot", str(tmp_path / "q.png"), "--names", "x,y"]) == 2
    assert mod.main(three + ["--plot-only", "--plot", str(tmp_path / "q.png")]) == 0 and (tmp_path / "q.png").is_file()


def test_two_cohort_sizes_test_and_validate_on_the_same_patients(tmp_path):
    # the generator pads ids to its cohort size's digits and the split hash reads the id: the benchmark's
    # canonical ids and whole chunks make patient i the same patient, in the same pool, at every size
    from exmed_bert.evaluation.label_efficiency import canonical_id

    assert canonical_id("P0042") == canonical_id("P000042") == "P00042" and canonical_id("P123456") == "P123456"
    bench = load_bench()
    got = {}
    for n in (300, 7000):                  # 2,000 and 10,000 generated: P0042 and P00042
        a = bench.parse(["--task", "trajectory", "--pretrain-patients", str(n), "--val-patients", "100",
                         "--test-patients", "80", "--seed", "5", "--out", str(tmp_path / str(n))])
        pools, _, _, risk, lines, _ = bench.prepare(a, Path(a.out), {})
        got[n] = pools, {p: lines[p] for p in pools.test + pools.val}, {p: risk[p] for p in pools.test}
    (small, small_lines, small_risk), (big, big_lines, big_risk) = got[300], got[7000]
    assert (small.test, small.val) == (big.test, big.val) and big.pretrain[:300] == small.pretrain
    assert small_lines == big_lines and small_risk == big_risk          # the same histories and true risks
