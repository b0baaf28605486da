"""embed-patients.py: one pooled embedding per task row, written to Parquet, equal to the model's own output."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from test_baselines import write_claims_fixture


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """80 claims patients with a conversion, and a tiny pretrained model with both time encodings."""
    from exmed_bert.data.vocab import Vocab
    from exmed_bert.model.modeling import ExMedBertConfig, ExMedBertForPreTraining
    from exmed_bert.training.callbacks import save_best

    tmp = tmp_path_factory.mktemp("embed")
    fx = write_claims_fixture(tmp, n=80)
    vocab = Vocab.load(fx["data"] / "vocab.json")
    torch.manual_seed(0)
    cfg = ExMedBertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, time_buckets=12, time2vec=True)
    fx["model"] = save_best(ExMedBertForPreTraining(cfg), tmp / "pretrained", vocab)
    return fx


def argv(fx, out, *extra):
    return ["--model-path", str(fx["model"]), "--data-dir", str(fx["data"]), "--task-data", str(fx["task"]),
            "--output", str(out), "--device", "cpu", "--batch-size", "7", *extra]


def expected_embeddings(fx, split: str, pooling: str) -> np.ndarray:
    """Each patient alone through the encoder (no batching, no truncation): its pooled output."""
    from exmed_bert.data.collate import Collator, IndexBatch
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.model.modeling import ExMedBertModel

    ds = PatientDataset.load(fx["data"] / f"synthetic_task_{split}.pt")
    model = ExMedBertModel.from_pretrained(fx["model"]).eval()
    collate = Collator.for_model(model.config, mlm=False)
    with torch.no_grad():
        return np.stack([model(**{k: v for k, v in collate(IndexBatch(ds, [i])).items() if k != "labels"},
                               pooling=pooling).pooled_output[0].numpy() for i in range(len(ds))])


def test_embeddings_round_trip_the_task_rows_and_the_models_pooled_output(setup, tmp_path):
    from exmed_bert.cli.embed import main
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.layout import US_PER_DAY

    out = tmp_path / "emb.parquet"
    assert main(argv(setup, out)) == 0
    table = pq.read_table(out)
    assert table.column_names == ["subject_id", "prediction_time", "split", "label", "embedding"]
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 32 and kind.value_type == pa.float32()
    assert str(table.schema.field("prediction_time").type) == "timestamp[us]"
    splits = {s: PatientDataset.load(setup["data"] / f"synthetic_task_{s}.pt") for s in ("train", "val", "test")}
    assert table.column("split").to_pylist() == [s for s, ds in splits.items() for _ in range(len(ds))]
    ids = [p for ds in splits.values() for p in ds.patient_ids]
    # the fixture's generator ids (P0042) are MEDS subjects by their number, in dataset order
    assert str(table.schema.field("subject_id").type) == "int64"
    assert table.column("subject_id").to_pylist() == [int(p.lstrip("P")) for p in ids]
    assert table.column("label").to_pylist() == [y for ds in splits.values() for y in ds.data["labels"].tolist()]
    days = np.concatenate([ds.data["prediction_days"].numpy() for ds in splits.values()]).astype(np.int64)
    assert (table.column("prediction_time").cast("int64").to_numpy() == days * US_PER_DAY).all()
    # batched (7 per pass, padded) export == each patient alone through the encoder, [CLS] pooling by default
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    n_train = len(splits["train"])
    np.testing.assert_allclose(got[:n_train], expected_embeddings(setup, "train", "cls"), atol=1e-5)

    test_only = tmp_path / "test_mean.parquet"
    assert main(argv(setup, test_only, "--split", "test", "--pooling", "mean")) == 0
    t = pq.read_table(test_only)
    assert t.num_rows == len(splits["test"]) and set(t.column("split").to_pylist()) == {"test"}
    np.testing.assert_allclose(np.stack(t.column("embedding").to_numpy(zero_copy_only=False)),
                               expected_embeddings(setup, "test", "mean"), atol=1e-5)
    assert not np.allclose(np.stack(t.column("embedding").to_numpy(zero_copy_only=False)),
                           expected_embeddings(setup, "test", "cls"), atol=1e-3)  # the pooling choice matters


def test_integer_ids_are_int64_and_bad_input_is_one_line(setup, tmp_path, capsys):
    from exmed_bert.cli.embed import main
    from exmed_bert.training.embed import embedding_table

    class Rows:  # the fields of a task PatientDataset embedding_table reads
        patient_ids = ["12", "7"]
        data = {"prediction_days": torch.tensor([10, 11]), "labels": torch.tensor([0, 1])}

        def __len__(self):
            return 2

    table = embedding_table([("val", Rows(), np.ones((2, 4), dtype=np.float32))])
    assert table.schema.field("subject_id").type == pa.int64() and table.column("subject_id").to_pylist() == [12, 7]
    assert main(argv(setup, tmp_path / "x.csv")) == 2 and ".parquet" in capsys.readouterr().err
    assert main(argv({**setup, "model": tmp_path / "nope"}, tmp_path / "x.parquet")) == 2
    assert "model folder not found" in capsys.readouterr().err
