"""Fine-tuning: main() end to end on ~60 patients with a tiny model, outputs, selection, bad inputs."""

import csv
import json

import pytest
import torch

from test_baselines import SIGNAL, write_claims_fixture, write_task_csv


def tiny_pretrained(folder, vocab):
    from exmed_bert.model.modeling import ExMedBertConfig, ExMedBertForPreTraining
    from exmed_bert.training.callbacks import save_best

    torch.manual_seed(0)
    cfg = ExMedBertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64)
    return save_best(ExMedBertForPreTraining(cfg), folder, vocab)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from exmed_bert.data.vocab import Vocab

    tmp = tmp_path_factory.mktemp("ft")
    fx = write_claims_fixture(tmp, n=80)
    fx["model"] = tiny_pretrained(tmp / "pretrained", Vocab.load(fx["data"] / "vocab.json"))
    return fx


def argv(fx, out, *extra):
    return ["--model-path", str(fx["model"]), "--data-dir", str(fx["data"]), "--task-data", str(fx["task"]),
            "--output-dir", str(out), "--num-epochs", "2", "--learning-rate", "1e-3", "--batch-size", "8",
            "--n-bootstrap", "50", "--device", "cpu", *extra]


def test_finetune_end_to_end(setup, tmp_path):
    from exmed_bert.cli.finetune import main
    from exmed_bert.model.modeling import ExMedBertForSequenceClassification

    out = tmp_path / "ft"
    assert main(argv(setup, out, "--metric-for-best-model", "f1")) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["model"] == "ExMed-BERT" and doc["split"] == "test" and doc["selected_on"] == "eval_f1"
    assert set(doc["metrics"]) >= {"auroc", "auprc", "f1", "precision", "recall", "brier", "ece"}
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == doc["n"] > 0
    test_ids = set(torch.load(setup["data"] / "synthetic_task_test.pt", weights_only=True)["patient_ids"])
    assert {r["patient_id"] for r in rows} == test_ids  # test patients only
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    for f in ("roc.png", "pr.png", "run_config.json", "training.log", "checkpoint-best/vocab.json",
              "checkpoint-best/model.safetensors"):
        assert (out / f).is_file(), f
    assert list((out / "runs").rglob("events.out.tfevents*")), "TensorBoard logs"
    model = ExMedBertForSequenceClassification.from_pretrained(out / "checkpoint-best")
    assert model.config.num_labels == 2


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """300 patients whose label is exactly "SIGNAL before the prediction date", and a random-init model."""
    from exmed_bert.data.vocab import Vocab

    tmp = tmp_path_factory.mktemp("ft_planted")
    fx = write_claims_fixture(tmp, n=300, signal_rates=(1.0, 0.0))
    fx["model"] = tiny_pretrained(tmp / "pretrained", Vocab.load(fx["data"] / "vocab.json"))
    return fx


def test_finetuning_finds_the_planted_code(planted, tmp_path):
    """The planted code alone separates the test patients (AUROC 1.0 is achievable; checked below).

    Measured (8 seeds of data and model, this recipe, 39 test patients): test AUROC 1.0 every time. With
    the code planted independently of the label (rates 0.5/0.5) the same run gives 0.26-0.62, so 0.9
    fails a model that did not find the code, or a pipeline that scrambles labels or patients.
    """
    from exmed_bert.cli.finetune import main
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab

    test = PatientDataset.load(planted["data"] / "synthetic_task_test.pt")
    signal = Vocab.load(planted["data"] / "vocab.json").id(f"icd10cm:{SIGNAL}")
    has_signal = [signal in test[i]["input_ids"].tolist() for i in range(len(test))]
    assert has_signal == [bool(y) for y in test.data["labels"].tolist()]  # the rule is exact on the test split
    assert 0 < sum(has_signal) < len(test)

    out = tmp_path / "ft"
    assert main(argv(planted, out, "--num-epochs", "8", "--learning-rate", "3e-3", "--seed", "0")) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["n"] == len(test)
    assert doc["metrics"]["auroc"]["value"] >= 0.9, doc["metrics"]["auroc"]


def test_freeze_encoder_keeps_encoder_weights(setup, tmp_path):
    from exmed_bert.cli.finetune import main
    from exmed_bert.model.modeling import ExMedBertForSequenceClassification
    from safetensors.torch import load_file

    out = tmp_path / "frozen"
    assert main(argv(setup, out, "--freeze-encoder-epochs", "5", "--metric-for-best-model", "loss")) == 0
    before = load_file(setup["model"] / "model.safetensors")
    after = ExMedBertForSequenceClassification.from_pretrained(out / "checkpoint-best").state_dict()
    key = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(before[key], after[key])


def test_frozen_weights_do_not_move_and_trainable_ones_do(setup, tmp_path):
    """--train-last-layers 1 on a 2-layer model: embeddings and layer 0 stay bit-identical through the
    Trainer's AdamW steps (weight decay included), layer 1 and the head move; --freeze-encoder keeps the
    whole encoder. --pooling mean is saved in checkpoint-best's config."""
    from exmed_bert.cli.finetune import main
    from safetensors.torch import load_file

    before = load_file(setup["model"] / "model.safetensors")
    top = tmp_path / "top"
    assert main(argv(setup, top, "--train-last-layers", "1", "--pooling", "mean", "--metric-for-best-model",
                     "loss", "--eval-steps", "2", "--save-steps", "2")) == 0
    after = load_file(top / "checkpoint-2" / "model.safetensors")
    encoder = [k for k in before if k.startswith("bert.")]
    moved = {k for k in encoder if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("bert.encoder.layer.1.") for k in moved), sorted(moved)
    assert len(moved) == len([k for k in encoder if k.startswith("bert.encoder.layer.1.")])  # all of layer 1 trains
    assert json.loads((top / "checkpoint-best" / "config.json").read_text())["classifier_pooling"] == "mean"
    first_head = after["classifier.out.weight"]

    head = tmp_path / "head"
    assert main(argv(setup, head, "--freeze-encoder", "--metric-for-best-model", "loss", "--eval-steps", "2",
                     "--save-steps", "2", "--max-steps", "4")) == 0
    early = load_file(head / "checkpoint-2" / "model.safetensors")
    late = load_file(head / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(before[k], late[k]) for k in encoder)
    assert not torch.equal(early["classifier.out.weight"], late["classifier.out.weight"])  # the head learns
    assert first_head.shape == late["classifier.out.weight"].shape


def test_freezing_flags_are_checked_in_one_line(setup, tmp_path, capsys):
    from exmed_bert.cli.finetune import main

    for extra, message in ((["--freeze-encoder", "--train-last-layers", "1"], "exclude each other"),
                           (["--train-last-layers", "0"], "at least 1"),
                           (["--train-last-layers", "3"], "only 2 encoder layers"),
                           (["--freeze-encoder", "--freeze-encoder-epochs", "1"], "--freeze-encoder-epochs")):
        assert main(argv(setup, tmp_path / "o", *extra)) == 2, extra
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]  # transformers' load bar may precede it
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_truncation_keeps_cls_and_recent_tokens(setup):
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.training.finetune import TruncatedDataset

    ds = PatientDataset.load(setup["data"] / "synthetic_task_train.pt")
    i = int(ds.lengths.argmax())
    t = TruncatedDataset(ds, 6)[i]
    full = ds[i]
    assert len(t["input_ids"]) == 6 and int(t["input_ids"][0]) == 2
    assert torch.equal(t["input_ids"][1:], full["input_ids"][-5:])
    assert int(t["position_ids"][1]) == 1


def test_bad_model_path_and_bad_labels_exit_2(setup, tmp_path, capsys):
    from exmed_bert.cli.finetune import main

    rc = main(argv({**setup, "model": tmp_path / "nope"}, tmp_path / "o"))
    assert rc == 2 and "model folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty_ckpt"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    rc = main(argv({**setup, "model": empty}, tmp_path / "o"))
    assert rc == 2 and "model.safetensors" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    write_task_csv(bad, [(p, 2, "2021-01-01") for p in setup["labels"]])  # every label out of range
    rc = main(argv({**setup, "task": bad}, tmp_path / "o"))
    err = capsys.readouterr().err
    assert rc == 2 and "no valid rows" in err and "out of range" in err and "Traceback" not in err


def test_model_path_may_be_the_pretraining_output_folder(tmp_path, capsys):
    """--model-path output/with_clinvec (the run's folder) uses its checkpoint-best, and says so."""
    from exmed_bert.training.finetune import check_model_folder

    best = tmp_path / "pretrained" / "checkpoint-best"
    best.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "vocab.json"):
        (best / name).write_text("{}")
    assert check_model_folder(tmp_path / "pretrained") == best
    assert "checkpoint-best" in capsys.readouterr().out
    assert check_model_folder(best) == best


def test_load_classifier_notes_the_new_head_and_refuses_missing_encoder_weights(tiny_model, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    from exmed_bert.errors import UserError
    from exmed_bert.training.finetune import load_classifier

    load_classifier(tiny_model, 2)
    out = capsys.readouterr()
    assert "new classification head initialised (4 tensors)" in out.out
    assert "LOAD REPORT" not in out.out + out.err          # transformers' key-by-key table is not shown

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = load_file(broken / "model.safetensors")
    dropped = next(k for k in weights if ".encoder." in k)
    save_file({k: v for k, v in weights.items() if k != dropped}, broken / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(UserError, match="lacks 1 encoder weight"):
        load_classifier(broken, 2)
