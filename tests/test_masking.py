"""MLM masking: rates, guarantees, cap, static vs dynamic, padded vs packed layouts."""

import torch

from exmed_bert.data.masking import mask_tokens
from exmed_bert.data.vocab import CLS_ID, MASK_ID, PAD_ID, SEP_ID

V = 100


def batch(b=64, t=200, lengths=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (b, t), generator=g)
    lengths = lengths if lengths is not None else torch.full((b,), t)
    pos = torch.arange(t).expand(b, t)
    ids[pos >= lengths[:, None]] = PAD_ID
    ids[:, 0] = CLS_ID
    ids[:, 10::10] = SEP_ID
    return ids, ids >= 5, pos


def run(ids, can, pos, index=None, **kw):
    index = torch.arange(len(ids)) if index is None else index
    kw.setdefault("seed", 1)
    return mask_tokens(ids, can, index, pos, vocab_size=V, **kw)


def test_rates_and_replacement_split():
    ids, can, pos = batch()
    out, labels = run(ids, can, pos)
    sel = labels != -100
    rate = sel.sum() / can.sum()
    assert 0.14 < rate < 0.16
    assert torch.equal(labels[sel], ids[sel]) and not (sel & ~can).any()  # specials and pads never chosen
    n = sel.sum().item()
    masked = (out[sel] == MASK_ID).sum().item() / n
    kept = (out[sel] == ids[sel]).sum().item() / n
    assert 0.77 < masked < 0.83 and 0.08 < kept < 0.14  # 10% unchanged + random draws equal to the original
    rand = out[sel & (out != MASK_ID) & (out != ids)]
    assert rand.numel() > 0.07 * n and (rand >= 5).all() and (rand < V).all()
    assert torch.equal(out[~sel], ids[~sel])


def test_at_least_one_masked_and_one_unmasked_and_single_code():
    lengths = torch.tensor([3, 4, 5, 200])  # [CLS] + 2, 3, 4 codes; a full one
    ids, can, pos = batch(4, 200, lengths)
    out, labels = run(ids, can, pos, mlm_probability=0.0)
    assert ((labels != -100).sum(1) == 1).all()
    out, labels = run(ids, can, pos, mlm_probability=1.0)
    assert ((labels != -100).sum(1) == can.sum(1) - 1).all()  # one real code stays visible
    single = torch.tensor([[CLS_ID, 7, SEP_ID, PAD_ID]])
    out, labels = run(single, single >= 5, torch.arange(4)[None])
    assert labels.tolist() == [[-100, 7, -100, -100]]  # a lone code is always selected


def test_cap_on_masked_tokens():
    ids, can, pos = batch(8, 200)
    _, labels = run(ids, can, pos, mlm_probability=0.5, max_masked=5)
    assert ((labels != -100).sum(1) == 5).all()
    _, uncapped = run(ids, can, pos, mlm_probability=0.5)
    assert ((labels != -100) <= (uncapped != -100)).all()  # the cap keeps a subset of the selection


def test_static_is_fixed_across_epochs_dynamic_changes():
    ids, can, pos = batch(16, 100)
    a, la = run(ids, can, pos, epoch=None)
    b, lb = run(ids, can, pos, epoch=None)
    assert torch.equal(a, b) and torch.equal(la, lb)
    d0, l0 = run(ids, can, pos, epoch=0)
    d1, l1 = run(ids, can, pos, epoch=1)
    assert not torch.equal(l0, l1) and torch.equal(run(ids, can, pos, epoch=1)[1], l1)
    assert not torch.equal(run(ids, can, pos, seed=2)[1], la)


def test_same_mask_in_padded_and_packed_layouts():
    lengths = torch.tensor([30, 50, 20])
    ids, can, pos = batch(3, 50, lengths)
    _, padded = run(ids, can, pos, index=torch.tensor([7, 8, 9]))
    # pack the three patients into one row of 100 tokens
    keep = pos < lengths[:, None]
    packed_ids = ids[keep][None]
    packed_pos = pos[keep][None]
    packed_idx = torch.tensor([7, 8, 9]).repeat_interleave(lengths)[None]
    _, packed = mask_tokens(packed_ids, packed_ids >= 5, packed_idx, packed_pos, seed=1, vocab_size=V)
    assert torch.equal(packed[0], padded[keep])
    for seg in packed[0].split(lengths.tolist()):
        assert (seg != -100).sum() >= 1  # guarantees hold per packed patient


def test_mask_does_not_depend_on_batch_composition():
    ids, can, pos = batch(6, 80)
    _, together = run(ids, can, pos, index=torch.arange(10, 16), epoch=3)
    for i in range(6):
        _, alone = run(ids[i:i + 1], can[i:i + 1], pos[i:i + 1], index=torch.tensor([10 + i]), epoch=3)
        assert torch.equal(alone[0], together[i])


def test_random_replacements_cover_the_code_range():
    ids, can, pos = batch(256, 200)
    out, labels = run(ids, can, pos, mlm_probability=0.5)
    rand = out[(labels != -100) & (out != MASK_ID) & (out != ids)]
    assert rand.min() < 15 and rand.max() > 90  # the id bits map onto the whole [5, V) span
    counts = torch.bincount(rand - 5, minlength=V - 5).float()
    assert counts.std() / counts.mean() < 0.35  # roughly uniform (expected ~0.2 at ~2.5k draws)


def test_guarantees_hold_for_many_short_packed_patients():
    lengths = torch.randint(2, 6, (300,), generator=torch.Generator().manual_seed(3))
    codes = torch.randint(5, V, (int(lengths.sum()),), generator=torch.Generator().manual_seed(4))
    idx = torch.arange(300).repeat_interleave(lengths)
    pos = torch.cat([torch.arange(n) for n in lengths.tolist()])
    _, labels = mask_tokens(codes[None], (codes >= 5)[None], idx[None], pos[None], seed=5, vocab_size=V,
                            max_masked=2)
    n = torch.zeros(300, dtype=torch.long).index_add_(0, idx, (labels[0] != -100).long())
    assert (n >= 1).all() and (n <= torch.clamp(lengths - 1, max=2)).all()
