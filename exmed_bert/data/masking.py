"""Masked-code selection for MLM batches, fully vectorised and stateless.

Every random number is an integer hash of (seed, patient index, token position[, epoch]), so a
patient's mask does not depend on batch composition, padding or packing, and needs no generator
state. Static masking (epoch=None) gives the same mask every epoch; dynamic masking passes the epoch.
"""

from __future__ import annotations

import torch

from exmed_bert.data.vocab import FIRST_CODE_ID, MASK_ID

_M1 = -4658895280553007687   # 0xBF58476D1CE4E5B9 as int64
_M2 = -7723592293110705685   # 0x94D049BB133111EB as int64
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_STREAM_SELECT, _STREAM_ACTION, _STREAM_TOKEN = 0x51, 0xA3, 0xC7


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64 finaliser on int64 (multiplication wraps mod 2**64)."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def _uniform(h: torch.Tensor, stream: int) -> torch.Tensor:
    """float64 in [0, 1) from 53 bits of mix(h ^ stream)."""
    return _shr(_mix(h ^ stream), 11).to(torch.float64) * (1.0 / (1 << 53))


def token_hash(patient_index: torch.Tensor, position: torch.Tensor, seed: int, epoch: int | None) -> torch.Tensor:
    """int64 [B, T] hash of (seed, patient, position[, epoch])."""
    h = _mix(torch.full_like(position, int(seed) & 0x7FFFFFFF, dtype=torch.int64))
    h = _mix(h ^ patient_index.to(torch.int64))
    h = _mix(h ^ position.to(torch.int64))
    if epoch is not None:
        h = _mix(h ^ (int(epoch) + 1))
    return h


def _segments(patient_index: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """[B*T] segment id per token: one segment per (row, run of equal patient index)."""
    b, t = shape
    if patient_index.dim() == 1:
        return torch.arange(b, device=patient_index.device).repeat_interleave(t)
    flat = patient_index.reshape(-1)
    new = torch.ones_like(flat, dtype=torch.bool)
    new[1:] = flat[1:] != flat[:-1]
    new[::t] = True
    return torch.cumsum(new.to(torch.int64), 0) - 1


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, patient_index: torch.Tensor,
                position: torch.Tensor, *, seed: int, vocab_size: int, epoch: int | None = None,
                mlm_probability: float = 0.15, max_masked: int | None = None,
                first_code_id: int = FIRST_CODE_ID) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking over a padded or packed batch.

    input_ids, maskable, position: [B, T] (maskable = real code tokens; position = the token's index in
    its patient's sequence). patient_index: [B] (padded) or [B, T] (packed) dataset row of each patient.
    Each maskable token is selected with `mlm_probability`; a selected token becomes [MASK] (80%), a
    random code id in [first_code_id, vocab_size) (10%) or stays (10%). Per patient, at least one token
    is selected, at least one is left unselected when the patient has two or more, and at most
    `max_masked` are selected (those with the smallest draws). A patient with a single code has it
    selected. Returns (masked_ids [B, T], labels [B, T] = original id where selected, else -100).
    """
    shape = input_ids.shape
    h = token_hash(patient_index if patient_index.dim() == 2 else patient_index[:, None].expand(shape),
                   position, seed, epoch).reshape(-1)
    u = _uniform(h, _STREAM_SELECT)
    can = maskable.reshape(-1).to(torch.bool)
    seg = _segments(patient_index, shape)
    nseg = int(seg[-1]) + 1 if seg.numel() else 0
    sel = can & (u < mlm_probability)

    # at least one selected: take the smallest draw of a segment that has none
    inf = torch.full_like(u, 2.0)
    u_can = torch.where(can, u, inf)
    seg_min = torch.full((nseg,), 2.0, dtype=u.dtype, device=u.device).scatter_reduce(0, seg, u_can, "amin")
    n_sel = torch.zeros(nseg, dtype=torch.int64, device=u.device).index_add_(0, seg, sel.to(torch.int64))
    sel |= can & (n_sel[seg] == 0) & (u_can == seg_min[seg])

    # cap: keep the `max_masked` smallest draws among the selected
    n_can = torch.zeros(nseg, dtype=torch.int64, device=u.device).index_add_(0, seg, can.to(torch.int64))
    cap = n_can - 1                                                     # leave one unselected
    cap = torch.where(n_can <= 1, n_can, cap)
    if max_masked is not None:
        cap = torch.clamp(cap, max=max(int(max_masked), 1))
    n_sel = torch.zeros(nseg, dtype=torch.int64, device=u.device).index_add_(0, seg, sel.to(torch.int64))
    if bool((n_sel > cap).any()):
        key = torch.where(sel, u, inf)
        order = torch.sort(key, stable=True).indices
        order = order[torch.sort(seg[order], stable=True).indices]      # by segment, then by draw
        seg_sorted = seg[order]
        start = torch.searchsorted(seg_sorted, seg_sorted)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=u.device) - start
        sel &= rank < cap[seg]

    flat = input_ids.reshape(-1)
    a = _uniform(h, _STREAM_ACTION)
    span = max(int(vocab_size) - first_code_id, 1)
    random_ids = first_code_id + (_uniform(h, _STREAM_TOKEN) * span).to(torch.int64).clamp_(max=span - 1)
    out = torch.where(sel & (a < 0.8), torch.full_like(flat, MASK_ID), flat)
    out = torch.where(sel & (a >= 0.8) & (a < 0.9), random_ids.to(flat.dtype), out)
    labels = torch.where(sel, flat.to(torch.int64), torch.full_like(flat, -100, dtype=torch.int64))
    return out.reshape(shape), labels.reshape(shape)
