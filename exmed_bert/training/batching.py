"""Fast batching: token-budget length buckets (or packed rows) and the vectorised pretraining collator.

Length buckets keep padding small and the set of shapes small (torch.compile compiles once per bucket);
packing puts several patients in one row with `seq_ids`, so attention is block-diagonal per patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

# Padded lengths. Steps of 16 at the short end (where the median patient lives), coarser in the tail.
DEFAULT_BUCKETS = (16, 32, 48, 64, 80, 96, 128, 160, 192, 256, 320, 384, 448, 512)
SEQ_KEYS = ("input_ids", "token_type_ids", "position_ids", "age_ids")


def bucket_lengths(lengths: np.ndarray | Sequence[int], bucket_sizes: Sequence[int] = DEFAULT_BUCKETS) -> np.ndarray:
    """Smallest bucket >= each length; beyond the last bucket, the next multiple of 64."""
    lengths = np.asarray(lengths, dtype=np.int64)
    buckets = np.asarray(sorted(bucket_sizes), dtype=np.int64)
    i = np.searchsorted(buckets, lengths, side="left")
    over = -(-lengths // 64) * 64
    return np.where(i < len(buckets), buckets[np.minimum(i, len(buckets) - 1)], over)


class TokenBudgetBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset indices whose padded size (rows x bucket length) stays under a token budget.

    Deterministic given (seed, epoch); call `set_epoch` each epoch to reshuffle. With `packing=True`
    the batches are random patients whose total length fits `max_tokens_per_batch` (the collator then
    packs them into rows); otherwise each batch holds patients of one length bucket.
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, max_tokens_per_batch: int = 16384, shuffle: bool = True,
                 seed: int = 0, bucket_sizes: Sequence[int] = DEFAULT_BUCKETS, packing: bool = False,
                 max_batch_size: int | None = None, drop_last: bool = False):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if max_tokens_per_batch < int(self.lengths.max(initial=1)):
            raise ValueError(f"max_tokens_per_batch ({max_tokens_per_batch}) is smaller than the longest patient "
                             f"({int(self.lengths.max())} tokens); raise --max-tokens-per-batch")
        self.max_tokens = int(max_tokens_per_batch)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        self.bucket_sizes = tuple(bucket_sizes)
        self.packing, self.max_batch_size, self.drop_last = packing, max_batch_size, drop_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches, in the order they will be yielded."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.packing:
            out = self._packed_batches(order)
        else:
            out = self._bucketed_batches(order)
        if self.shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def _bucketed_batches(self, order: np.ndarray) -> list[np.ndarray]:
        padded = bucket_lengths(self.lengths[order], self.bucket_sizes)
        out = []
        for b in np.unique(padded):
            ids = order[padded == b]  # this bucket, in shuffled order
            size = max(1, self.max_tokens // int(b))
            if self.max_batch_size:
                size = min(size, self.max_batch_size)
            chunks = [ids[i:i + size] for i in range(0, len(ids), size)]
            if self.drop_last and chunks and len(chunks[-1]) < size:
                chunks.pop()
            out.extend(chunks)
        return out

    def _packed_batches(self, order: np.ndarray) -> list[np.ndarray]:
        # Start a new batch each time the running total of tokens crosses another 90% of the budget:
        # first-fit packing of random lengths leaves a few percent of each row empty.
        lens = self.lengths[order]
        cap = max(1, int(0.9 * self.max_tokens))
        group = (np.cumsum(lens) - lens) // cap  # batch number of each patient, non-decreasing
        bounds = np.flatnonzero(np.diff(group)) + 1
        out = [c for c in np.split(order, bounds) if len(c)]
        if self.max_batch_size:
            out = [c[i:i + self.max_batch_size] for c in out for i in range(0, len(c), self.max_batch_size)]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.batches():
            yield b.tolist()

    def __len__(self) -> int:
        return len(self.batches())


def pack_rows(lengths: Sequence[int], row_length: int) -> tuple[np.ndarray, np.ndarray]:
    """First-fit-decreasing: (row, offset) of each sequence in rows of `row_length` tokens.

    A Python loop over patients (not tokens): a few hundred per batch.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    row = np.empty(len(lengths), dtype=np.int64)
    offset = np.empty(len(lengths), dtype=np.int64)
    used: list[int] = []
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        for r, u in enumerate(used):
            if u + n <= row_length:
                row[i], offset[i], used[r] = r, u, u + n
                break
        else:
            row[i], offset[i] = len(used), 0
            used.append(n)
    return row, offset


@dataclass
class PretrainCollator:
    """DataLoader collate_fn: `PatientDataset` items -> the model-input dict, masked, padded or packed.

    Returns (B, T) long `input_ids, token_type_ids, position_ids, age_ids, sex_ids, attention_mask`,
    plus `labels` (B, T) (MLM targets, -100 elsewhere) when `mlm`, or `labels` (P,) from the items'
    task labels when not; `plos_labels` (P,) when `plos_threshold` is set; `seq_ids` (B, T) when
    packing (patients 0..P-1 row-major, -1 padding). Masks are a hash of (seed, patient row, token
    position[, epoch]), so packed and padded layouts of the same patients get the same masks.
    Set `epoch` each epoch for dynamic masking; leave it None for static masking.
    """

    vocab_size: int = 0
    seed: int = 42
    epoch: int | None = None
    mlm: bool = True
    mlm_probability: float = 0.15
    max_masked: int | None = None
    plos_threshold: int | None = None
    bucket_sizes: Sequence[int] = DEFAULT_BUCKETS
    pack_length: int | None = None  # set -> pack patients into rows of this many tokens
    first_code_id: int = 5
    return_index: bool = False
    mask_fn: Callable | None = field(default=None, repr=False)  # default: exmed_bert.data.masking.mask_tokens

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([it["input_ids"].shape[0] for it in items], dtype=torch.long)  # (P,)
        order = torch.arange(len(items))  # output patient order (P,)
        if self.pack_length:
            row_np, off_np = pack_rows(lengths.numpy(), max(self.pack_length, int(lengths.max())))
            order = torch.from_numpy(np.lexsort((off_np, row_np)))  # row-major: by row, then offset
            items = [items[i] for i in order.tolist()]
            lengths = lengths[order]
            n_rows = int(row_np.max()) + 1
            used = torch.zeros(n_rows, dtype=torch.long).index_add_(0, torch.from_numpy(row_np)[order], lengths)
            t = max(int(bucket_lengths([int(self.pack_length)], self.bucket_sizes)[0]), int(used.max()))
        else:
            n_rows, used = len(items), lengths
            t = int(bucket_lengths([int(lengths.max())], self.bucket_sizes)[0])
        # Each row is filled from its start without gaps (a packed row's patients sit back to back), so
        # the real slots in row-major order are exactly the concatenated tokens in output order.
        real = torch.arange(t)[None, :] < used[:, None]  # (R, T)

        flat = [torch.cat([it[k] for it in items]).long() for k in SEQ_KEYS]  # 4 x (N,)
        index = torch.tensor([it["index"] for it in items], dtype=torch.long)
        sex = torch.tensor([it["sex"] for it in items], dtype=torch.long)
        tok_item = torch.repeat_interleave(torch.arange(len(items)), lengths)  # (N,) output patient of each token
        within = torch.arange(tok_item.numel()) - (torch.cumsum(lengths, 0) - lengths)[tok_item]  # (N,) position
        fields, fill = flat + [sex[tok_item]], [0] * 5
        if self.mlm:
            # One (1, N) "packed row" with a per-token patient index: the mask depends only on
            # (patient, position), never on how the batch is laid out.
            masked, mlm_labels = self._mask_fn()(
                flat[0][None], (flat[0] >= self.first_code_id)[None], index[tok_item][None], within[None],
                seed=self.seed, epoch=self.epoch, vocab_size=self.vocab_size,
                mlm_probability=self.mlm_probability, max_masked=self.max_masked, first_code_id=self.first_code_id)
            fields[0] = masked[0]
            fields.append(mlm_labels[0])
            fill.append(-100)
        if self.pack_length:
            fields.append(tok_item)  # seq_ids: patients are numbered in row-major order
            fill.append(-1)
        # One masked_scatter for every per-token field (several times faster than index_put on CPU).
        grid = torch.tensor(fill, dtype=torch.long)[:, None, None].repeat(1, n_rows, t)  # (F, R, T)
        grid.masked_scatter_(real[None].expand_as(grid), torch.stack(fields))
        out = dict(zip(SEQ_KEYS, grid[:4]))
        out["sex_ids"], out["attention_mask"] = grid[4], real.long()
        if self.mlm:
            out["labels"] = grid[5]
        elif "label" in items[0]:
            out["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
        if self.pack_length:
            out["seq_ids"] = grid[-1]
        if self.plos_threshold is not None:
            los = torch.tensor([it["plos_los"] for it in items], dtype=torch.long)
            out["plos_labels"] = (los >= self.plos_threshold).long()
        if self.return_index:
            out["index"] = index
        return out

    def _mask_fn(self) -> Callable:
        if self.mask_fn is None:
            from exmed_bert.data.masking import mask_tokens

            self.mask_fn = mask_tokens
        return self.mask_fn
