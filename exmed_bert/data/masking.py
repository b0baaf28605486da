"""Masked-code selection for MLM batches, fully vectorised and stateless.

Every random number comes from one 64-bit hash per token of (seed, patient index, position[, epoch]),
so a patient's mask does not depend on batch composition, padding or packing, and needs no generator
state. Static masking (epoch=None) gives the same mask every epoch; dynamic masking passes the epoch.
The arithmetic runs in NumPy on uint64 (wrapping multiplies, logical shifts, segment reductions with
`reduceat`): on data-loader-sized batches (~10k tokens) its per-op overhead is a fraction of torch's.
"""

from __future__ import annotations

import numpy as np
import torch

from exmed_bert.data.vocab import FIRST_CODE_ID, MASK_ID

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
_M1, _M2, _GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15
_NEVER = _U64(_MASK64)  # draw of tokens that can never be selected (larger than any real draw)
# Bit layout of a token's hash h: bits 0-63 = selection draw (the high bits decide selection and the
# ranking for the guarantees), bits 0-15 = 80/10/10 action, bits 16-47 = random replacement id.
# Selection needs h < p * 2**64, i.e. only its top bits matter, so it is ~independent of the low bits.
_ACTION_BITS, _TOKEN_BITS = 16, 32


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a fresh uint64 array (multiplication wraps mod 2**64)."""
    x += _U64(_GOLDEN)
    x ^= x >> _U64(30)
    x *= _U64(_M1)
    x ^= x >> _U64(27)
    x *= _U64(_M2)
    x ^= x >> _U64(31)
    return x


def _mix_int(x: int) -> int:
    """The same finaliser on a Python int (for the per-call key)."""
    x = (x + _GOLDEN) & _MASK64
    x = ((x ^ (x >> 30)) * _M1) & _MASK64
    x = ((x ^ (x >> 27)) * _M2) & _MASK64
    return x ^ (x >> 31)


def token_hash(patient_index, position, seed: int, epoch: int | None) -> np.ndarray:
    """uint64 hash of (seed, patient, position[, epoch]), shaped like `position`: one mix per token.

    (seed, epoch) fold into one scalar key; (patient, position) pack into one 64-bit word (patient in
    the high 32 bits, position in the low 32), so distinct tokens feed distinct inputs to the bijective
    mix. Accepts torch tensors or NumPy arrays.
    """
    key = _mix_int(int(seed) & _MASK64)
    if epoch is not None:
        key = _mix_int(key ^ (int(epoch) + 1))
    pi, pos = np.asarray(patient_index), np.asarray(position)
    x = pi.astype(np.int64, copy=False).view(_U64) << _U64(32)
    x |= pos.astype(np.int64, copy=False).view(_U64) & _U64(0xFFFFFFFF)
    x ^= _U64(key)
    return _mix(x)


def _segment_starts(patient_index: np.ndarray, b: int, t: int) -> np.ndarray:
    """Flat index where each segment starts: one segment per (row, run of equal patient index)."""
    if patient_index.ndim == 1:
        return np.arange(b, dtype=np.int64) * t
    flat = patient_index.reshape(-1)
    new = np.empty(flat.shape, dtype=bool)
    new[0] = True
    np.not_equal(flat[1:], flat[:-1], out=new[1:])
    new[::t] = True
    return np.flatnonzero(new)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


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
    shape, device = input_ids.shape, input_ids.device
    b, t = shape
    if input_ids.numel() == 0:
        return input_ids.clone(), torch.full(shape, -100, dtype=torch.int64, device=device)
    pi = _numpy(patient_index)
    pos = _numpy(position)
    h = token_hash(pi if pi.ndim == 2 else np.broadcast_to(pi[:, None], shape), pos, seed, epoch).reshape(-1)
    can = _numpy(maskable).reshape(-1).astype(bool, copy=False)
    draw = np.where(can, h, _NEVER)                                      # (N,) uint64
    p = float(mlm_probability)
    sel = can.copy() if p >= 1.0 else draw < _U64(min(int(max(p, 0.0) * 2.0**64), _MASK64))

    starts = _segment_starts(pi, b, t)                                   # (S,) segments are contiguous runs
    lengths = np.diff(starts, append=draw.size)
    n_sel = np.add.reduceat(sel.astype(np.int64), starts)                # (S,)
    n_can = np.add.reduceat(can.astype(np.int64), starts)

    # At least one selected: a segment with none selects its smallest draw (draws are distinct per token).
    empty = (n_sel == 0) & (n_can > 0)
    if empty.any():
        seg_min = np.minimum.reduceat(draw, starts)
        seg_min[~empty] = _NEVER                                         # matches no maskable token
        pick = (draw == np.repeat(seg_min, lengths)) & can
        sel |= pick
        n_sel += np.add.reduceat(pick.astype(np.int64), starts)

    # Cap: leave one unselected (patients with >= 2 codes), then `max_masked`; keep the smallest draws.
    cap = np.where(n_can <= 1, n_can, n_can - 1)
    if max_masked is not None:
        cap = np.minimum(cap, max(int(max_masked), 1))
    over = n_sel > cap
    if over.any():
        seg = np.repeat(np.arange(starts.size), lengths)                 # (N,) segment of each token
        idx = np.flatnonzero(sel & over[seg])                            # selected tokens of over-cap segments
        idx = idx[np.lexsort((draw[idx], seg[idx]))]                     # by segment, then draw
        s = seg[idx]
        rank = np.arange(idx.size) - np.searchsorted(s, s)
        sel[idx[rank >= cap[s]]] = False

    ids = _numpy(input_ids).reshape(-1)
    out = ids.copy()
    labels = np.full(ids.shape, -100, dtype=np.int64)
    chosen = np.flatnonzero(sel)                                         # (M,) ~15% of tokens
    labels[chosen] = ids[chosen]
    hc = h[chosen]
    action = hc & _U64((1 << _ACTION_BITS) - 1)                          # uniform in [0, 2**16)
    out[chosen[action < _U64(int(0.8 * (1 << _ACTION_BITS)))]] = MASK_ID
    rand = (action >= _U64(int(0.8 * (1 << _ACTION_BITS)))) & (action < _U64(int(0.9 * (1 << _ACTION_BITS))))
    span = max(int(vocab_size) - first_code_id, 1)
    bits = (hc[rand] >> _U64(_ACTION_BITS)) & _U64((1 << _TOKEN_BITS) - 1)
    out[chosen[rand]] = ((bits * _U64(span)) >> _U64(_TOKEN_BITS)).astype(np.int64) + first_code_id
    return (torch.from_numpy(out.reshape(shape)).to(device),
            torch.from_numpy(labels.reshape(shape)).to(device))
