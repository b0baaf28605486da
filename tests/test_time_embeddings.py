"""Time-before-reference embeddings: the bucket rule, the collator's time_ids (task and pretraining, padded,
packed, truncated), the off switch (time_buckets=0) and a planted recency label only they can learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from exmed_bert.data.collate import Collator, IndexBatch, time_buckets_of
from exmed_bert.data.dataset import UNKNOWN_BIRTH, PatientDataset, build_dataset_dict
from exmed_bert.model.modeling import ExMedBertConfig, ExMedBertForPreTraining, ExMedBertForSequenceClassification
from exmed_bert.training.finetune import TruncatedDataset

V = 100
CLS, SEP = 2, 3


def tiny_config(**kw) -> ExMedBertConfig:
    base = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=16)
    return ExMedBertConfig(**{**base, **kw})


def make_dataset(patients: list[list[tuple[int, list[int]]]], prediction_days=None, labels=None) -> PatientDataset:
    """patients: per patient a list of (day, codes) visits -> [CLS] codes [SEP] codes [SEP] ... as the converter
    lays them out ([CLS] on the first visit's day, each [SEP] on its visit's day, ages fixed at 50)."""
    ids, types, pos, days, offsets = [], [], [], [], [0]
    for visits in patients:
        ids.append(CLS), types.append(0), pos.append(0), days.append(visits[0][0])
        for v, (day, codes) in enumerate(visits, start=1):
            for c in codes:
                ids.append(c), types.append(1), pos.append(v), days.append(day)
            ids.append(SEP), types.append(0), pos.append(v), days.append(day)
        offsets.append(len(ids))
    n = len(patients)
    parts = dict(input_ids=ids, token_type_ids=types, position_ids=pos, age_ids=[50] * len(ids), days=days,
                 offsets=offsets, sex=[1] * n, birth_days=[-20000] * n, los_offsets=[0] * (n + 1), los_days=[],
                 los_start_days=[])
    data = build_dataset_dict(parts, [f"p{i}" for i in range(n)], labels=labels, prediction_days=prediction_days)
    return PatientDataset(data)


# patient 0: visits on days 100 and 200; patient 1: visits on days 0 and 1000
TWO = [[(100, [10]), (200, [11, 12])], [(0, [13]), (1000, [14])]]


def test_bucket_rule_on_hand_values():
    days = np.array([-3, 0, 1, 2, 3, 6, 7, 30, 31, 180, 1022, 1023, 100_000])
    assert time_buckets_of(days, 12).tolist() == [1, 1, 2, 2, 3, 3, 4, 5, 6, 8, 10, 11, 11]
    assert time_buckets_of(days, 4).tolist() == [1, 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3]  # clamped to 3


def test_task_time_ids_count_codes_back_from_the_last_event_and_cls_from_the_prediction_date():
    ds = make_dataset(TWO, prediction_days=[230, 1030], labels=[0, 1])
    out = Collator(mlm=False, time_buckets=12)(IndexBatch(ds, [0, 1]))
    # [CLS] code [SEP] code code [SEP] | padding. Codes: 100 days before the last event (day 200) -> 7, on it -> 1;
    # [CLS]: the last event was 30 days before the prediction date -> 5; [SEP] and padding 0
    assert out["time_ids"][0, :6].tolist() == [5, 7, 0, 1, 1, 0]
    assert out["time_ids"][1, :5].tolist() == [5, 10, 0, 1, 0]  # 1000 days before the last event -> 10
    assert out["time_ids"][1, 5:].eq(0).all() and out["time_ids"].shape == out["input_ids"].shape


def test_pretraining_and_task_time_codes_the_same_way_only_cls_differs():
    task = Collator(mlm=False, time_buckets=12, time2vec=True)(IndexBatch(
        make_dataset(TWO, prediction_days=[230, 1030], labels=[0, 1]), [0, 1]))
    ds = make_dataset(TWO)
    padded = Collator(vocab_size=V, seed=1, time_buckets=12, time2vec=True, return_index=True)(IndexBatch(ds, [0, 1]))
    # pretraining reads each history the day after its last event: [CLS] 1 day -> 2; codes exactly as in the task
    expected = {0: [2, 7, 0, 1, 1, 0], 1: [2, 10, 0, 1, 0]}
    assert padded["time_ids"][0, :6].tolist() == expected[0] and padded["time_ids"][1, :5].tolist() == expected[1]
    assert torch.equal(padded["time_ids"][:, 1:], task["time_ids"][:, 1:])
    assert torch.equal(padded["time_values"][:, 1:], task["time_values"][:, 1:])
    assert padded["time_ids"][1, 5:].eq(0).all()
    # masking replaces ids, never times; packing lays the same per-patient times out in one row
    packed = Collator(vocab_size=V, seed=1, time_buckets=12, time2vec=True, pack_length=16,
                      return_index=True)(IndexBatch(ds, [0, 1]))
    for k, i in enumerate(packed["index"].tolist()):
        assert packed["time_ids"][packed["seq_ids"] == k].tolist() == expected[i]
        assert torch.equal(packed["time_values"][packed["seq_ids"] == k], padded["time_values"][i, :len(expected[i])])
    assert packed["time_ids"][packed["seq_ids"] == -1].eq(0).all()
    assert packed["time_values"][packed["seq_ids"] == -1].eq(0).all()


def test_time_values_are_calendar_day_and_age_in_days():
    ds = make_dataset(TWO, prediction_days=[230, 1030], labels=[0, 1])  # born on day -20000
    v = Collator(mlm=False, time2vec=True)(IndexBatch(ds, [0, 1]))["time_values"]
    assert v.dtype == torch.float32 and v.shape == (2, 16, 2)  # padded to the first length bucket
    # [CLS] carries the prediction date; codes and [SEP]s their own day; age = day - birth day
    assert v[0, :6, 0].tolist() == [230, 100, 100, 200, 200, 200]
    assert v[0, :6, 1].tolist() == [20230, 20100, 20100, 20200, 20200, 20200]
    assert v[1, :5, 0].tolist() == [1030, 0, 0, 1000, 1000] and v[1, 5:].eq(0).all()
    # an unknown birth date: the middle of the token's age year (ages are 50 here), in days
    ds.data["birth_days"][0] = UNKNOWN_BIRTH
    v = Collator(mlm=False, time2vec=True)(IndexBatch(ds, [0]))["time_values"]
    assert torch.allclose(v[0, :3, 1], torch.full((3,), 50.5 * 365.25))


def test_an_empty_history_gets_times_too():
    """A patient with only [CLS] (no events before the prediction date) collates and runs with both encodings."""
    ds = make_dataset([[(100, [10])]], prediction_days=[130], labels=[1])
    d = ds.data
    only_cls = build_dataset_dict(dict(input_ids=[CLS], token_type_ids=[0], position_ids=[0], age_ids=[50],
                                       days=[130], offsets=[0, 1], sex=[1], birth_days=[-20000], los_offsets=[0, 0],
                                       los_days=[], los_start_days=[]), ["e"], labels=[0], prediction_days=[130])
    both = PatientDataset({**d, **{k: torch.cat([d[k], only_cls[k]]) for k in ("input_ids", "token_type_ids",
                           "position_ids", "age_ids", "days", "sex", "birth_days", "labels", "prediction_days")},
                           "offsets": torch.tensor([0, 3, 4]), "los_offsets": torch.tensor([0, 0, 0]),
                           "patient_ids": ["p0", "e"]})
    out = Collator(mlm=False, time_buckets=12, time2vec=True)(IndexBatch(both, [0, 1]))
    assert out["time_ids"][1, :1].tolist() == [1] and out["time_values"][1, 0].tolist() == [130, 20130]
    model = ExMedBertForSequenceClassification(tiny_config(time_buckets=12, time2vec=True)).eval()
    assert torch.isfinite(model(**out).logits).all()


def test_truncated_items_keep_times_aligned_with_their_tokens():
    ds = make_dataset(TWO, prediction_days=[230, 1030], labels=[0, 1])
    items = TruncatedDataset(ds, 4, with_days=True)
    out = Collator(mlm=False, time_buckets=12)([items[0], items[1]])
    # patient 0 keeps [CLS] + its last 3 tokens (code code [SEP] of day 200), patient 1 [CLS] + [SEP] 1000 [SEP]
    assert out["input_ids"][0, :4].tolist() == [CLS, 11, 12, SEP] and out["time_ids"][0, :4].tolist() == [5, 1, 1, 0]
    assert out["input_ids"][1, :4].tolist() == [CLS, SEP, 14, SEP] and out["time_ids"][1, :4].tolist() == [5, 0, 1, 0]
    # the flat IndexBatch path and the item path agree when nothing is cut
    full = TruncatedDataset(ds, 64, with_days=True)
    a = Collator(mlm=False, time_buckets=12, time2vec=True)([full[0], full[1]])
    b = Collator(mlm=False, time_buckets=12, time2vec=True)(IndexBatch(ds, [0, 1]))
    assert all(torch.equal(a[k], b[k]) for k in b)
    with pytest.raises(ValueError, match="'days', 'reference_day' and 'birth_day'"):
        Collator(mlm=False, time_buckets=12)([ds[0], ds[1]])


def test_off_by_default_no_table_no_time_ids_and_old_checkpoints_load(tmp_path):
    ds = make_dataset(TWO, prediction_days=[230, 1030], labels=[0, 1])
    batch = Collator(mlm=False)(IndexBatch(ds, [0, 1]))
    timed = Collator(mlm=False, time_buckets=12)(IndexBatch(ds, [0, 1]))
    assert "time_ids" not in batch and set(timed) - set(batch) == {"time_ids"}
    assert all(torch.equal(batch[k], timed[k]) for k in batch)  # time only adds a key
    torch.manual_seed(0)
    off = ExMedBertForSequenceClassification(tiny_config()).eval()
    assert off.config.time_buckets == 0 and not any("time" in k for k in off.state_dict())
    with pytest.raises(ValueError, match="no time embeddings"):
        off(**timed)
    # a checkpoint written before the field existed (no time_buckets in config.json) loads as off, same outputs
    off.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("time_buckets")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    old = ExMedBertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert old.config.time_buckets == 0 and set(old.state_dict()) == set(off.state_dict())
    batch.pop("labels")
    assert torch.equal(old(**batch).logits, off(**batch).logits)
    # with the table on but all zero, the same weights give the same outputs: time is purely additive
    on = ExMedBertForSequenceClassification(tiny_config(time_buckets=12)).eval()
    assert set(on.state_dict()) - set(off.state_dict()) == {"bert.embeddings.time_embeddings.weight"}
    missing = on.load_state_dict(off.state_dict(), strict=False).missing_keys
    assert missing == ["bert.embeddings.time_embeddings.weight"]
    with torch.no_grad():
        on.bert.embeddings.time_embeddings.weight.zero_()
    timed.pop("labels")
    assert torch.allclose(on(**timed).logits, off(**batch).logits, atol=1e-6)
    with pytest.raises(ValueError, match="got no time_ids"):
        on(**batch)


def test_time_buckets_survive_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = ExMedBertForPreTraining(tiny_config(time_buckets=12)).eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["time_buckets"] == 12
    back = ExMedBertForPreTraining.from_pretrained(tmp_path).eval()
    assert back.config.time_buckets == 12 and back.bert.embeddings.time_embeddings.num_embeddings == 12
    batch = Collator(vocab_size=V, seed=1, time_buckets=12)(IndexBatch(make_dataset(TWO), [0, 1]))
    batch.pop("labels")
    assert torch.equal(back(**batch).mlm_logits, model(**batch).mlm_logits)
    with pytest.raises(ValueError, match="time_buckets"):
        tiny_config(time_buckets=1)


def recency_dataset(n: int, seed: int) -> PatientDataset:
    """Label 1: the last visit (codes 20-29, one marker 30) was 1-30 days before the prediction date; label 0:
    2-5 years before. Codes, counts, visits, gaps between visits and ages have one distribution for both."""
    rng = np.random.default_rng(seed)
    patients, pred, labels = [], [], []
    for i in range(n):
        y = i % 2
        last = int(rng.integers(5000, 8000))
        first = last - int(rng.integers(10, 400))
        patients.append([(first, [int(c) for c in rng.integers(20, 30, 2)]), (last, [30, int(rng.integers(20, 30))])])
        pred.append(last + int(rng.integers(1, 31) if y else rng.integers(730, 1826)))
        labels.append(y)
    return make_dataset(patients, prediction_days=pred, labels=labels)


def fit_auroc(time_buckets: int, seed: int) -> float:
    """Train a tiny classifier from scratch, full batch, on 200 patients; test AUROC on 200 others."""
    train, test = recency_dataset(200, seed), recency_dataset(200, seed + 100)
    collate = Collator(mlm=False, time_buckets=time_buckets)
    tr, te = collate(IndexBatch(train, range(200))), collate(IndexBatch(test, range(200)))
    torch.manual_seed(seed)
    model = ExMedBertForSequenceClassification(tiny_config(time_buckets=time_buckets, hidden_dropout_prob=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        model(**tr).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        p = torch.softmax(model(**{k: v for k, v in te.items() if k != "labels"}).logits, -1)[:, 1]
    return roc_auc_score(te["labels"].numpy(), p.numpy())


def test_only_a_model_with_time_embeddings_learns_a_recency_label():
    with_time = [fit_auroc(12, s) for s in (0, 1, 2)]
    without = [fit_auroc(0, s) for s in (0, 1, 2)]
    assert min(with_time) > 0.9, with_time
    assert np.mean(without) < 0.65, without  # the inputs carry no signal without time: chance level
    assert np.mean(with_time) - np.mean(without) > 0.3


def test_time2vec_survives_save_and_load_and_packing_gives_the_padded_outputs(tmp_path):
    torch.manual_seed(0)
    model = ExMedBertForPreTraining(tiny_config(time_buckets=12, time2vec=True, hidden_dropout_prob=0.0,
                                                attention_probs_dropout_prob=0.0)).eval()
    t2v = model.bert.embeddings.calendar_time
    assert torch.allclose(t2v.frequency[1:3], torch.full((2,), 2 * torch.pi / 7.0))  # the shortest period: a week
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["time2vec"] is True
    back = ExMedBertForPreTraining.from_pretrained(tmp_path).eval()
    ds = make_dataset(TWO)
    padded = Collator(vocab_size=V, seed=1, time_buckets=12, time2vec=True, plos_threshold=1)(IndexBatch(ds, [0, 1]))
    packed = Collator(vocab_size=V, seed=1, time_buckets=12, time2vec=True, plos_threshold=1,
                      pack_length=16)(IndexBatch(ds, [0, 1]))
    with torch.no_grad():
        a, b, c = back(**padded), model(**padded), model(**packed)
    assert torch.equal(a.loss, b.loss)
    assert torch.allclose(b.loss, c.loss, atol=1e-5)  # same patients, same masks: packing changes nothing
    with torch.no_grad():  # the time values reach the model: shifting every day changes the output
        shifted = dict(padded, time_values=padded["time_values"] + torch.tensor([365.0, 0.0]))
        assert not torch.allclose(model(**shifted).loss, b.loss)
    padded.pop("time_values")
    with pytest.raises(ValueError, match="got no time_values"):
        model(**padded)
    with pytest.raises(ValueError, match="no Time2Vec"):
        ExMedBertForPreTraining(tiny_config(time_buckets=12))(**packed)
