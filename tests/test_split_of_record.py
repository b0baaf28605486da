"""One split of record: fine-tuning and the baselines read the conversion's train/val/test
assignment, fine-tuning on re-encoded patients takes it from the conversion the model was pretrained
on, a split that would score pretraining patients is refused, and --split-seed is not --seed."""

import csv
import json

import pytest
import torch

from exmed_bert.convert.conversion import convert_patients
from exmed_bert.data.splits import (SPLITS, Pretraining, SplitRecord, check_no_pretraining_leak, find_pretraining,
                                    resolve_split, split_of)
from exmed_bert.data.vocab import Vocab
from exmed_bert.errors import UserError
from exmed_bert.io import file_fingerprint, write_run_info
from exmed_bert.tasks import load_task_splits
from test_baselines import make_patients, write_task_csv
from test_finetune import tiny_pretrained

SEED, RATIO = 5, 0.7  # the conversion's split; neither is a default (42, 0.8), so falling back to one shows


def convert(folder, patients, task, seed, ratio=RATIO):
    out = folder / "synthetic.pt"
    convert_patients(patients, out, task_data=task, seed=seed, train_ratio=ratio, progress=False)
    return folder


def task_ids(data, split):
    return list(torch.load(data / f"synthetic_task_{split}.pt", weights_only=True)["patient_ids"])


def pretrained_run(run, data):
    """What pretraining leaves: checkpoint-best/ and a run_config.json naming its --data-dir (the keys a
    real run writes; test_a_real_pretraining_run_records_its_conversion checks them on one)."""
    best = tiny_pretrained(run / "checkpoint-best", Vocab.load(data / "vocab.json"))
    write_run_info(run, {"data_dir": str(data), "dataset_name": "synthetic", "seed": 42},
                   extra={"data_fingerprint": {"train": file_fingerprint(data / "synthetic_train.pt")}})
    return best


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split_record")
    patients, task = make_patients(80, seed=3)
    pj, tc = tmp / "patients.json", tmp / "task.csv"
    pj.write_text(json.dumps({"patients": patients}))
    write_task_csv(tc, task)
    data = convert(tmp / "data", pj, tc, SEED)
    ids = [p for p, _, _ in task]
    # every patient has events before its date, so the task splits are exactly the hash's splits
    for s in SPLITS:
        assert set(task_ids(data, s)) == {p for p in ids if split_of(p, SEED, RATIO) == s}
    return {"patients": pj, "task": tc, "data": data, "ids": ids, "model": pretrained_run(tmp / "pretrained", data)}


def ft_argv(fx, data_dir, out, *extra):
    return ["--model-path", str(fx["model"]), "--data-dir", str(data_dir), "--input", str(fx["patients"]),
            "--task-data", str(fx["task"]), "--output-dir", str(out), "--num-epochs", "1", "--batch-size", "16",
            "--n-bootstrap", "20", "--device", "cpu", "--metric-for-best-model", "loss", *extra]


def hash_split(ids, split, seed, ratio):
    return {p for p in ids if split_of(p, seed, ratio) == split}


# ---------------------------------------------------------------------------------------------
# where the split of record comes from


def test_a_real_pretraining_run_records_its_conversion(tiny_model, tiny_data):
    pre, why = find_pretraining(tiny_model)
    assert why is None
    assert pre.data_dir == tiny_data and pre.train_path == tiny_data / "synthetic_train.pt"
    assert pre.record == SplitRecord(42, 0.8, str(tiny_data / "dataset_manifest.json"))
    assert find_pretraining(tiny_model.parent)[0] == pre  # the run folder works as well


def test_find_pretraining_follows_a_finetuning_run_and_says_why_it_cannot(fx, tmp_path):
    ft = tmp_path / "finetuned"
    tiny_pretrained(ft / "checkpoint-best", Vocab.load(fx["data"] / "vocab.json"))
    write_run_info(ft, {"data_dir": "elsewhere", "task_data": "t.csv"}, extra={"model_path": str(fx["model"])})
    pre, why = find_pretraining(ft / "checkpoint-best")
    assert why is None and pre.train_path == fx["data"] / "synthetic_train.pt"
    assert pre.record == SplitRecord(SEED, RATIO, str(fx["data"] / "dataset_manifest.json"))

    bare = tmp_path / "bare"
    tiny_pretrained(bare, Vocab.load(fx["data"] / "vocab.json"))
    pre, why = find_pretraining(bare)
    assert pre is None and "no run_config.json" in why
    stale = tmp_path / "stale"
    tiny_pretrained(stale / "checkpoint-best", Vocab.load(fx["data"] / "vocab.json"))
    write_run_info(stale, {"data_dir": str(fx["data"]), "dataset_name": "synthetic"},
                   extra={"data_fingerprint": {"train": "0" * 64}})
    pre, why = find_pretraining(stale / "checkpoint-best")
    assert pre is None and "changed since the model was pretrained" in why


def test_flags_may_only_repeat_the_split_of_record():
    rec = SplitRecord(SEED, RATIO, "m.json")
    assert resolve_split(rec) is rec and resolve_split(rec, SEED, RATIO) is rec
    with pytest.raises(UserError, match=r"--split-seed 6 differs from the split of record \(seed 5, train ratio 0.7"):
        resolve_split(rec, split_seed=6)
    with pytest.raises(UserError, match="--train-ratio 0.8 differs"):
        resolve_split(rec, train_ratio=0.8)
    assert (resolve_split(None).seed, resolve_split(None).train_ratio) == (42, 0.8)
    assert (resolve_split(None, 3, 0.6).seed, resolve_split(None, 3, 0.6).train_ratio) == (3, 0.6)


def test_a_conversions_split_is_not_overridden_by_flags(fx, tmp_path):
    splits, _, source = load_task_splits(fx["data"], fx["task"], num_labels=2, output_dir=tmp_path)
    assert source["split"] == {"seed": SEED, "train_ratio": RATIO, "from": str(fx["data"] / "dataset_manifest.json")}
    assert set(splits["test"].patient_ids) == hash_split(fx["ids"], "test", SEED, RATIO)
    with pytest.raises(UserError, match="--split-seed 42 differs"):
        load_task_splits(fx["data"], fx["task"], num_labels=2, output_dir=tmp_path, split_seed=42)


# ---------------------------------------------------------------------------------------------
# fine-tuning


def test_fallback_uses_the_pretraining_conversions_split(fx, tmp_path, capsys):
    """No conversion in --data-dir: --input is encoded here, split as the model's pretraining data was."""
    from exmed_bert.cli.finetune import main

    empty = tmp_path / "no_conversion"
    empty.mkdir()
    out = tmp_path / "ft"
    rc = main(ft_argv(fx, empty, out, "--seed", "9"))
    assert rc == 0, capsys.readouterr().err
    scored = {r["patient_id"] for r in csv.DictReader(open(out / "predictions.csv"))}
    assert scored == set(task_ids(fx["data"], "test"))
    assert scored != hash_split(fx["ids"], "test", 42, 0.8)  # what the defaults would have chosen
    assert scored != hash_split(fx["ids"], "test", 9, 0.8)   # ... and the training seed
    record = json.loads((out / "run_config.json").read_text())["data"]
    assert record["split"] == {"seed": SEED, "train_ratio": RATIO, "from": str(fx["data"] / "dataset_manifest.json")}
    assert record["pretraining_data"] == str(fx["data"] / "synthetic_train.pt")


def test_scoring_pretraining_patients_is_refused(fx, tmp_path, capsys):
    """--data-dir holds the same patients converted with another seed: some of its test patients were
    pretraining train patients."""
    from exmed_bert.cli.finetune import main

    other = convert(tmp_path / "other", fx["patients"], fx["task"], seed=SEED + 1)
    other_test = task_ids(other, "test")
    leaked = [p for p in other_test if split_of(p, SEED, RATIO) == "train"]
    assert leaked  # the planted overlap
    out = tmp_path / "ft"
    rc = main(ft_argv(fx, other, out))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err
    assert (f"{len(leaked)} of {len(other_test)} patients in the fine-tuning test split (e.g. {leaked[0]!r}) are in "
            f"the pretraining train split ({fx['data'] / 'synthetic_train.pt'})") in errors[0]
    assert f"--data-dir {fx['data']}" in errors[0]
    assert not (out / "checkpoint-best").exists()

    rc = main(ft_argv(fx, tmp_path / "no_conversion", out, "--split-seed", str(SEED + 1)))
    err = capsys.readouterr().err
    assert rc == 2 and "--split-seed 6 differs from the split of record" in err


def test_leak_check_names_the_split_the_count_and_an_example():
    pre = Pretraining(None, "pre/synthetic_train.pt", SplitRecord(1, 0.8, "m"), None)
    check_no_pretraining_leak({"train": ["A", "B"], "val": ["C"], "test": ["D"]}, ["A", "B"], pre)  # train may overlap
    with pytest.raises(UserError, match=r"^2 of 3 patients in the fine-tuning val split \(e\.g\. 'B'\)"):
        check_no_pretraining_leak({"val": ["Z", "B", "C"], "test": ["D"]}, ["B", "C"], pre)
    with pytest.raises(UserError, match=r"1 of 1 patients in the fine-tuning test split \(e\.g\. 'D'\).*--seed 1"):
        check_no_pretraining_leak({"val": ["C"], "test": ["D"]}, ["D"], pre)


def splits_of_run(monkeypatch, argv) -> dict:
    """The task splits a fine-tuning run reads; it stops right after loading them (no training)."""
    import exmed_bert.training.finetune as finetune
    from exmed_bert.cli.finetune import main

    seen = {}

    def capture(*a, **k):
        splits, _, source = load_task_splits(*a, **k)
        seen.update({s: set(ds.patient_ids) for s, ds in splits.items()}, source=source)
        raise UserError("stopped after the split")

    monkeypatch.setattr(finetune, "load_task_splits", capture)  # the name the run calls
    assert main(argv) == 2
    return seen


def test_split_seed_is_independent_of_the_training_seed(fx, tmp_path, monkeypatch):
    """A model with no record of its pretraining data: the split is --split-seed's (default 42), whatever --seed is."""
    bare = tmp_path / "bare"
    tiny_pretrained(bare, Vocab.load(fx["data"] / "vocab.json"))
    empty = tmp_path / "no_conversion"
    empty.mkdir()
    fx = {**fx, "model": bare}
    a = splits_of_run(monkeypatch, ft_argv(fx, empty, tmp_path / "a", "--seed", "1"))
    b = splits_of_run(monkeypatch, ft_argv(fx, empty, tmp_path / "b", "--seed", "2"))
    c = splits_of_run(monkeypatch, ft_argv(fx, empty, tmp_path / "c", "--seed", "1", "--split-seed", "3",
                                           "--train-ratio", "0.6"))
    assert all(a[s] == b[s] == hash_split(fx["ids"], s, 42, 0.8) for s in SPLITS)
    assert all(c[s] == hash_split(fx["ids"], s, 3, 0.6) for s in SPLITS) and c["test"] != a["test"]
    assert c["source"]["split"]["seed"] == 3 and c["source"]["pretraining_data"] is None


# ---------------------------------------------------------------------------------------------
# baselines


@pytest.mark.parametrize("main_name", ["main_rf", "main_xgboost"])
def test_baselines_score_the_conversions_test_split(fx, tmp_path, main_name):
    import exmed_bert.cli.baselines as cli

    out = tmp_path / main_name
    rc = getattr(cli, main_name)(["--data-dir", str(fx["data"]), "--task-data", str(fx["task"]), "--output-dir",
                                  str(out), "--n-estimators", "10", "--n-bootstrap", "20", "--n-jobs", "1"])
    assert rc == 0
    scored = {r["patient_id"] for r in csv.DictReader(open(out / "predictions.csv"))}
    assert scored == set(task_ids(fx["data"], "test")) == hash_split(fx["ids"], "test", SEED, RATIO)
    assert scored != hash_split(fx["ids"], "test", 42, 0.8)
    assert json.loads((out / "run_config.json").read_text())["data"]["split"]["seed"] == SEED
