"""Token-budget bucketed/packed batch sampler, first-fit packing and the pretraining collator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exmed_bert.training.batching import (PretrainCollator, TokenBudgetBatchSampler, bucket_lengths, pack_rows)

V = 100


def make_items(n: int = 50, seed: int = 0, max_len: int = 60) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        t = int(torch.randint(2, max_len + 1, (1,), generator=g))
        ids = torch.randint(5, V, (t,), generator=g, dtype=torch.int32)
        ids[0] = 2
        pos = torch.arange(t, dtype=torch.int16) // 3
        items.append(dict(input_ids=ids, token_type_ids=torch.ones(t, dtype=torch.int8), position_ids=pos,
                          age_ids=pos + 30, sex=1 + i % 2, plos_los=i % 10, index=i, label=i % 2))
    return items


def lognormal_lengths(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(80), 0.7, n).astype(int), 2, 512)


def test_bucket_lengths_round_up_to_the_next_bucket():
    got = bucket_lengths([1, 16, 17, 81, 512, 600], (16, 32, 96, 512))
    assert got.tolist() == [16, 16, 32, 96, 512, 640]


@pytest.mark.parametrize("packing", [False, True])
def test_sampler_covers_every_patient_once_under_the_budget(packing):
    lengths = lognormal_lengths(500)
    s = TokenBudgetBatchSampler(lengths, max_tokens_per_batch=2048, seed=3, packing=packing)
    batches = list(s)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500)) and len(s) == len(batches)
    for b in batches:
        if packing:  # ~90% of the budget plus at most one patient
            assert lengths[b].sum() <= 0.9 * 2048 + 512
        else:
            assert len(b) * bucket_lengths([lengths[b].max()])[0] <= 2048
            assert len(set(bucket_lengths(lengths[b]).tolist())) == 1  # one bucket per batch


def test_sampler_is_deterministic_per_seed_and_epoch():
    lengths = lognormal_lengths(300)
    a = TokenBudgetBatchSampler(lengths, 2048, seed=1)
    b = TokenBudgetBatchSampler(lengths, 2048, seed=1)
    assert [list(x) for x in a] == [list(x) for x in b]
    first = [list(x) for x in a]
    a.set_epoch(1)
    assert [list(x) for x in a] != first
    unshuffled = TokenBudgetBatchSampler(lengths, 2048, shuffle=False)
    assert [list(x) for x in unshuffled] == [list(x) for x in TokenBudgetBatchSampler(lengths, 2048, shuffle=False)]


def test_sampler_rejects_budget_below_longest_patient():
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        TokenBudgetBatchSampler([10, 600], max_tokens_per_batch=512)


def test_pack_rows_fills_rows_without_overlap():
    lengths = lognormal_lengths(200, seed=2)
    row, off = pack_rows(lengths, 512)
    occupied = {}
    for r, o, n in zip(row, off, lengths):
        assert o + n <= 512
        span = set(range(o, o + n))
        assert not occupied.get(r, set()) & span
        occupied.setdefault(r, set()).update(span)
    assert row.max() + 1 <= int(np.ceil(lengths.sum() / 512 * 1.15))  # first-fit-decreasing packs tightly


@pytest.mark.parametrize("pack_length", [None, 128])
def test_collator_places_every_token_and_masks_consistently(pack_length):
    items = make_items(30)
    c = PretrainCollator(vocab_size=V, seed=5, plos_threshold=7, pack_length=pack_length, return_index=True)
    batch = c(items)
    t = batch["input_ids"].shape[1]
    assert t in (16, 32, 48, 64, 80, 96, 128, 160)
    restored = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
    order = batch["index"].tolist()
    real = batch["attention_mask"].bool()
    if pack_length:
        seq = batch["seq_ids"]
        assert seq.max() + 1 == len(items) and torch.equal(seq >= 0, real)
        got = [restored[seq == p] for p in range(len(items))]
        sex = [batch["sex_ids"][seq == p] for p in range(len(items))]
    else:
        got = [restored[i][real[i]] for i in range(len(items))]
        sex = [batch["sex_ids"][i][real[i]] for i in range(len(items))]
    for p, i in enumerate(order):
        assert torch.equal(got[p], items[i]["input_ids"].long())
        assert bool((sex[p] == items[i]["sex"]).all())
    assert batch["plos_labels"].tolist() == [int(items[i]["plos_los"] >= 7) for i in order]
    masked = batch["labels"] != -100
    assert masked.sum() > 0 and bool((batch["labels"][masked] >= 5).all())  # specials are never targets
    assert bool((batch["labels"][~real] == -100).all())


def test_packed_and_padded_batches_get_the_same_masks():
    items = make_items(20)
    a = PretrainCollator(vocab_size=V, seed=5)(items)
    b = PretrainCollator(vocab_size=V, seed=5, pack_length=128)(items)
    assert sorted(a["labels"][a["labels"] != -100].tolist()) == sorted(b["labels"][b["labels"] != -100].tolist())


def test_dynamic_masking_changes_with_epoch_static_does_not():
    items = make_items(20)
    c = PretrainCollator(vocab_size=V, seed=5, epoch=0)
    first = c(items)["labels"]
    c.epoch = 1
    assert not torch.equal(first, c(items)["labels"])
    static = PretrainCollator(vocab_size=V, seed=5)
    assert torch.equal(static(items)["labels"], static(items)["labels"])


def test_collator_without_mlm_returns_task_labels_per_patient():
    items = make_items(10)
    batch = PretrainCollator(mlm=False, pack_length=64, return_index=True)(items)
    assert batch["labels"].tolist() == [items[i]["label"] for i in batch["index"].tolist()]
    assert batch["input_ids"].dtype == torch.long and "seq_ids" in batch
