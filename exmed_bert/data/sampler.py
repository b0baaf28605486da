"""Which patients share a batch: length buckets under a token budget (or random patients up to the
budget, for packed rows), reshuffled per (seed, epoch).

Length buckets keep padding small and the set of shapes small (torch.compile compiles once per bucket).
`--batch-size` is patients per batch (the guide); `--max-tokens-per-batch` switches to a token budget.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from exmed_bert.errors import UserError

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


class EpochBatch(list):
    """One batch's dataset indices, stamped with the epoch the batch sampler drew it in.

    The sampler runs in the main process and hands each index list to the DataLoader worker that builds the
    batch, so the stamp is how the epoch reaches persistent workers, whose copy of the collator was made
    once (dynamic masking reads it: `PretrainCollator.mask_epoch`). A plain list otherwise; pickles as one.
    """

    def __init__(self, indices=(), epoch: int = 0):
        super().__init__(indices)
        self.epoch = int(epoch)


class TokenBudgetBatchSampler(torch.utils.data.Sampler):
    """Batches of dataset indices whose padded size (rows x bucket length) stays under a token budget.

    Deterministic given (seed, epoch); call `set_epoch` each epoch to reshuffle. With `packing=True`
    the batches are random patients whose total length fits `max_tokens_per_batch` (the collator then
    packs them into rows); otherwise each batch holds patients of one length bucket. Yields `EpochBatch`es.
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

    def __iter__(self) -> Iterator[EpochBatch]:
        epoch = self.epoch  # read when the DataLoader starts the pass, after the Trainer's set_epoch
        for b in self.batches():
            yield EpochBatch(b.tolist(), epoch)

    def __len__(self) -> int:
        return len(self.batches())


def make_sampler(lengths: np.ndarray | Sequence[int], *, batch_size: int, max_tokens_per_batch: int | None,
                 shuffle: bool, seed: int, packing: bool = False) -> TokenBudgetBatchSampler:
    """The sampler for a stage's flags: `max_tokens_per_batch` tokens per batch when set, else `batch_size`
    patients of one length bucket per batch."""
    lengths = np.asarray(lengths)
    if max_tokens_per_batch:
        budget, cap = int(max_tokens_per_batch), None
    else:
        # a budget no bucket can reach: every batch is `batch_size` patients of one length bucket
        budget, cap = int(batch_size) * int(bucket_lengths([int(lengths.max())])[0]), int(batch_size)
    try:
        return TokenBudgetBatchSampler(lengths, max_tokens_per_batch=budget, shuffle=shuffle, seed=seed,
                                       max_batch_size=cap, packing=packing)
    except ValueError as e:
        raise UserError(str(e)) from None
