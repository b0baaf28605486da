"""Token-budget bucketed/packed batch sampler, first-fit packing and the pretraining collator."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from exmed_bert.data.dataset import PatientDataset, build_dataset_dict
from exmed_bert.data.collate import Collator, IndexBatch, batched_view, pack_rows
from exmed_bert.data.dataset import SEQ_KEYS
from exmed_bert.data.masking import mask_tokens
from exmed_bert.data.sampler import EpochBatch, TokenBudgetBatchSampler, bucket_lengths
from exmed_bert.data.vocab import FIRST_CODE_ID

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
    c = Collator(vocab_size=V, seed=5, plos_threshold=7, pack_length=pack_length, return_index=True)
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
    a = Collator(vocab_size=V, seed=5)(items)
    b = Collator(vocab_size=V, seed=5, pack_length=128)(items)
    assert sorted(a["labels"][a["labels"] != -100].tolist()) == sorted(b["labels"][b["labels"] != -100].tolist())


def test_dynamic_masking_changes_with_epoch_static_does_not():
    items = make_items(20)
    c = Collator(vocab_size=V, seed=5, epoch=0)
    first = c(items)["labels"]
    c.epoch = 1
    assert not torch.equal(first, c(items)["labels"])
    static = Collator(vocab_size=V, seed=5)
    assert torch.equal(static(items)["labels"], static(items)["labels"])


def test_sampler_stamps_batches_with_their_epoch_and_the_stamp_survives_pickling():
    s = TokenBudgetBatchSampler(lognormal_lengths(100), 2048, seed=1)
    s.set_epoch(3)
    batches = list(s)
    assert all(isinstance(b, EpochBatch) and b.epoch == 3 for b in batches)
    copy = pickle.loads(pickle.dumps(batches[0]))  # how a batch reaches a DataLoader worker
    assert copy == batches[0] and copy.epoch == 3


def test_dynamic_collator_masks_by_the_batch_stamp_static_ignores_it():
    ds = make_dataset(30, seed=5, labels=False)
    idx = list(range(30))
    dynamic = Collator(vocab_size=V, seed=5, dynamic=True)
    stamped = [dynamic(IndexBatch(ds, idx, epoch=e))["labels"] for e in (0, 1)]
    assert not torch.equal(*stamped)
    dynamic.set_epoch(1)  # the collator's own epoch (a stale copy in a worker) does not override the stamp
    assert torch.equal(dynamic(IndexBatch(ds, idx, epoch=0))["labels"], stamped[0])
    assert torch.equal(dynamic(IndexBatch(ds, idx))["labels"], stamped[1])  # unstamped: the collator's epoch
    assert torch.equal(Collator(vocab_size=V, seed=5, epoch=1)(IndexBatch(ds, idx))["labels"], stamped[1])
    static = Collator(vocab_size=V, seed=5)
    static.set_epoch(1)
    assert torch.equal(static(IndexBatch(ds, idx, epoch=0))["labels"], static(IndexBatch(ds, idx, epoch=1))["labels"])


def test_collator_without_mlm_returns_task_labels_per_patient():
    items = make_items(10)
    batch = Collator(mlm=False, pack_length=64, return_index=True)(items)
    assert batch["labels"].tolist() == [items[i]["label"] for i in batch["index"].tolist()]
    assert batch["input_ids"].dtype == torch.long and "seq_ids" in batch


# ---- the vectorised collator gives exactly the outputs of the previous per-item implementation --------------
def reference_collate(c: Collator, items: list[dict]) -> dict:
    """`Collator.__call__` as it was before the dataset-slicing rewrite (verbatim, `self` -> `c`)."""
    lengths = torch.tensor([it["input_ids"].shape[0] for it in items], dtype=torch.long)
    order = torch.arange(len(items))
    if c.pack_length:
        row_np, off_np = pack_rows(lengths.numpy(), max(c.pack_length, int(lengths.max())))
        order = torch.from_numpy(np.lexsort((off_np, row_np)))
        items = [items[i] for i in order.tolist()]
        lengths = lengths[order]
        n_rows = int(row_np.max()) + 1
        used = torch.zeros(n_rows, dtype=torch.long).index_add_(0, torch.from_numpy(row_np)[order], lengths)
        t = max(int(bucket_lengths([int(c.pack_length)], c.bucket_sizes)[0]), int(used.max()))
    else:
        n_rows, used = len(items), lengths
        t = int(bucket_lengths([int(lengths.max())], c.bucket_sizes)[0])
    real = torch.arange(t)[None, :] < used[:, None]
    flat = [torch.cat([it[k] for it in items]).long() for k in SEQ_KEYS]
    index = torch.tensor([it["index"] for it in items], dtype=torch.long)
    sex = torch.tensor([it["sex"] for it in items], dtype=torch.long)
    tok_item = torch.repeat_interleave(torch.arange(len(items)), lengths)
    within = torch.arange(tok_item.numel()) - (torch.cumsum(lengths, 0) - lengths)[tok_item]
    fields, fill = flat + [sex[tok_item]], [0] * 5
    if c.mlm:
        masked, mlm_labels = mask_tokens(
            flat[0][None], (flat[0] >= FIRST_CODE_ID)[None], index[tok_item][None], within[None],
            seed=c.seed, epoch=c.epoch, vocab_size=c.vocab_size,
            mlm_probability=c.mlm_probability, max_masked=c.max_masked, first_code_id=FIRST_CODE_ID)
        fields[0] = masked[0]
        fields.append(mlm_labels[0])
        fill.append(-100)
    if c.pack_length:
        fields.append(tok_item)
        fill.append(-1)
    grid = torch.tensor(fill, dtype=torch.long)[:, None, None].repeat(1, n_rows, t)
    grid.masked_scatter_(real[None].expand_as(grid), torch.stack(fields))
    out = dict(zip(SEQ_KEYS, grid[:4]))
    out["sex_ids"], out["attention_mask"] = grid[4], real.long()
    if c.mlm:
        out["labels"] = grid[5]
    elif "label" in items[0]:
        out["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
    if c.pack_length:
        out["seq_ids"] = grid[-1]
    if c.plos_threshold is not None:
        los = torch.tensor([it["plos_los"] for it in items], dtype=torch.long)
        out["plos_labels"] = (los >= c.plos_threshold).long()
    if c.return_index:
        out["index"] = index
    return out


def make_dataset(n: int = 60, seed: int = 0, labels: bool = True) -> PatientDataset:
    """A PatientDataset with the on-disk dtypes, lengths 1..200, a few stays per patient."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 200, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tot = int(offsets[-1])
    ids = rng.integers(0, V, tot)
    ids[offsets[:-1]] = 2  # [CLS]
    stays = rng.integers(0, 4, n)
    parts = dict(input_ids=ids, token_type_ids=rng.integers(0, 4, tot), position_ids=rng.integers(0, 300, tot),
                 age_ids=rng.integers(0, 120, tot), days=rng.integers(0, 9000, tot), offsets=offsets,
                 sex=rng.integers(0, 3, n), birth_days=rng.integers(0, 9000, n),
                 los_offsets=np.concatenate([[0], np.cumsum(stays)]), los_days=rng.integers(0, 20, int(stays.sum())))
    y = rng.integers(0, 2, n) if labels else None
    return PatientDataset(build_dataset_dict(parts, [f"p{i}" for i in range(n)], y, y))


def assert_same_batch(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert torch.equal(got[k], want[k]), k


COLLATOR_SETTINGS = [dict(), dict(pack_length=128), dict(pack_length=512, max_masked=3), dict(epoch=3, mlm_probability=0.4),
                     dict(mlm=False), dict(mlm=False, pack_length=256), dict(plos_threshold=7, return_index=True),
                     dict(plos_threshold=3, return_index=True, pack_length=64, epoch=0)]


@pytest.mark.parametrize("settings", COLLATOR_SETTINGS)
def test_collator_matches_the_reference_on_random_batches(settings):
    ds = make_dataset(80, seed=1)
    c = Collator(vocab_size=V, seed=7, **settings)
    rng = np.random.default_rng(0)
    for _ in range(12):
        idx = rng.choice(len(ds), int(rng.integers(1, 40)), replace=False).tolist()
        want = reference_collate(c, [ds[i] for i in idx])
        assert_same_batch(c([ds[i] for i in idx]), want)  # a list of items (any Dataset)
        assert_same_batch(c(IndexBatch(ds, idx)), want)  # indices into the dataset's flat arrays (the Trainer path)


@pytest.mark.parametrize("pack_length", [None, 128])
def test_collator_matches_the_reference_on_hand_made_items(pack_length):
    items = make_items(40, seed=3)  # int32/int8/int16 tensors, not dataset slices
    c = Collator(vocab_size=V, seed=5, plos_threshold=7, pack_length=pack_length, return_index=True)
    assert_same_batch(c(items), reference_collate(c, items))


def test_sampler_batches_reach_the_collator_as_index_batches():
    ds = make_dataset(50, seed=2, labels=False)
    sampler = TokenBudgetBatchSampler(ds.lengths, 1024, seed=0)
    c = Collator(vocab_size=V, seed=1, return_index=True)
    assert batched_view(ds, lambda items: items) is ds  # collators that want item lists see the dataset as is
    loader = torch.utils.data.DataLoader(batched_view(ds, c), batch_sampler=sampler, collate_fn=c)
    seen = []
    for idx, batch in zip(sampler, loader):
        assert_same_batch(batch, reference_collate(c, [ds[i] for i in idx]))
        seen += batch["index"].tolist()
    assert len(seen) > 0
    assert sorted(seen) == list(range(len(ds)))
    # an IndexBatch is still a sequence of items for collators that iterate (e.g. the fine-tuning one)
    b = IndexBatch(ds, [3, 1])
    assert len(b) == 2 and [it["index"] for it in b] == [3, 1] and b[-1]["index"] == 1
