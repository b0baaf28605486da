"""Patients -> the model-input dict: one vectorised collator for pretraining (masked, padded to a length
bucket or packed into rows) and fine-tuning (task labels, no masking).

Packing puts several patients in one row with `seq_ids`, so attention is block-diagonal per patient.
With `time_buckets` > 0 it also returns `time_ids` (how long before the end of the history each code happened;
[CLS]: how long before the day the history is read), with `time2vec` `time_values` (calendar day and age).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from exmed_bert.data.dataset import SEQ_KEYS, UNKNOWN_BIRTH
from exmed_bert.data.masking import mask_tokens
from exmed_bert.data.sampler import DEFAULT_BUCKETS, bucket_lengths
from exmed_bert.data.vocab import FIRST_CODE_ID


def time_buckets_of(days_before: np.ndarray, time_buckets: int) -> np.ndarray:
    """Bucket of "days before the reference day": 1 + floor(log2(1 + days)), days clamped at 0 and the
    bucket at `time_buckets - 1` (bucket 0 is kept for [CLS], special tokens and padding).

    0 days -> 1, 1-2 -> 2, 3-6 -> 3, 7-14 -> 4, 15-30 -> 5, 31-62 -> 6, 63-126 -> 7, 127-254 -> 8,
    255-510 -> 9, 511-1022 -> 10, 1023+ -> 11 with 12 buckets. Exact: frexp gives floor(log2) of integers.
    """
    d = np.maximum(np.asarray(days_before, dtype=np.int64), 0) + 1
    exponent = np.frexp(d.astype(np.float64))[1] - 1  # floor(log2(d)), exact for d < 2**53
    return np.minimum(1 + exponent, time_buckets - 1).astype(np.int64)


DAYS_PER_YEAR = 365.25


def reference_days(data: dict, offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(P,) the day each history is read at, for dataset rows `idx`: the prediction date of a task dataset,
    else (pretraining) the day after the patient's last event. Only [CLS] is timed from it; codes are timed
    from the history's last event, the same reference in pretraining and fine-tuning (`time_ids_of`)."""
    if "prediction_days" in data:
        return data["prediction_days"].numpy()[idx].astype(np.int64)
    return data["days"].numpy()[offsets[idx + 1] - 1].astype(np.int64) + 1


def time_ids_of(day: np.ndarray, last_day: np.ndarray, read_day: np.ndarray, token_type: np.ndarray,
                first: np.ndarray, time_buckets: int) -> np.ndarray:
    """(N,) time bucket of each token: a code gets the bucket of its days before its history's last event
    (`last_day`, per token), the patient's first token ([CLS]) the bucket of the days from that last event to
    `read_day` (prediction date, or the day after the last event in pretraining: 1 day), other special tokens
    ([SEP], type 0) bucket 0. So a code's time means the same in pretraining and fine-tuning, and only [CLS]
    says how long the history had been silent when it was read."""
    codes = np.where(token_type != 0, time_buckets_of(last_day - day, time_buckets), 0)
    return np.where(first, time_buckets_of(read_day - last_day, time_buckets), codes)


def time_values_of(day: np.ndarray, read_day: np.ndarray, birth_day: np.ndarray, age_years: np.ndarray,
                   first: np.ndarray) -> np.ndarray:
    """(N, 2) float32 Time2Vec inputs of each token: its calendar day (days since 1970; [CLS]: the day the
    history is read) and the patient's age that day in days (from `birth_day`; with an unknown birth,
    UNKNOWN_BIRTH, the middle of the token's `age_years`), never below 0."""
    when = np.where(first, read_day, day).astype(np.float64)
    known = birth_day != UNKNOWN_BIRTH
    age = np.where(known, when - birth_day, (age_years + 0.5) * DAYS_PER_YEAR)
    return np.stack([when, np.maximum(age, 0.0)], axis=1).astype(np.float32)


def uses_time(config) -> bool:
    """Whether a model with this config takes time inputs, so its batches need each token's `days`."""
    return getattr(config, "time_buckets", 0) > 0 or bool(getattr(config, "time2vec", False))


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


class IndexBatch(Sequence):
    """A batch as dataset row indices. `Collator` slices the dataset's flat token arrays with them
    (one NumPy gather per field, no per-patient dicts); any other collator can still iterate it as items.
    `epoch`: the epoch the batch sampler drew it in (`EpochBatch.epoch`), None when unknown.
    """

    def __init__(self, dataset, indices: Sequence[int], epoch: int | None = None):
        self.dataset, self.indices, self.epoch = dataset, indices, epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        return self.dataset[self.indices[k]]

    def __iter__(self):
        return (self.dataset[i] for i in self.indices)

    def columns(self, need_plos: bool, need_labels: bool, need_time: bool = False) -> dict:
        """The batch as arrays: flat token fields of the whole dataset plus per-patient (P,) columns."""
        ds, d = self.dataset, self.dataset.data
        idx = np.asarray(self.indices, dtype=np.int64)
        idx = np.where(idx < 0, idx + len(ds), idx)
        starts = ds.offsets[idx]
        return dict(tokens=[d[k].numpy() for k in SEQ_KEYS], starts=starts, lengths=ds.offsets[idx + 1] - starts,
                    index=idx, sex=d["sex"].numpy()[idx],
                    plos_los=ds.plos_los[idx] if need_plos else None,
                    label=d["labels"].numpy()[idx] if need_labels and ds.has_labels else None,
                    days=d["days"].numpy() if need_time else None,
                    reference=reference_days(d, ds.offsets, idx) if need_time else None,
                    birth=d["birth_days"].numpy()[idx] if need_time else None)


class _IndexBatches(torch.utils.data.Dataset):
    """A PatientDataset whose batched fetch (`__getitems__`, used by DataLoader with a batch sampler)
    returns one `IndexBatch` instead of a list of per-patient dicts."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[i]

    def __getitems__(self, indices: list[int]) -> IndexBatch:
        # runs in the DataLoader worker; the list came from the batch sampler in the main process
        return IndexBatch(self.dataset, indices, getattr(indices, "epoch", None))


def batched_view(dataset, collate_fn):
    """The dataset a DataLoader should wrap for `collate_fn`: a `PatientDataset` (flat `data` + `offsets`)
    whose batches arrive as one `IndexBatch` when the collator takes them (`takes_index_batches`), else
    `dataset` itself (collators that expect a list of item dicts see no change)."""
    if not getattr(collate_fn, "takes_index_batches", False) or isinstance(dataset, _IndexBatches) \
            or not (hasattr(dataset, "data") and hasattr(dataset, "offsets")):
        return dataset
    return _IndexBatches(dataset)


def _numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _item_columns(items: Sequence[dict], need_plos: bool, need_labels: bool, need_time: bool = False) -> dict:
    """`columns()` for a plain list of item dicts: one concatenation per field. Time needs each item's `days`
    (per token), `reference_day` and `birth_day` (training.finetune.TruncatedDataset(..., with_days=True) adds
    them)."""
    if need_time and not all("days" in it and "reference_day" in it and "birth_day" in it for it in items):
        raise ValueError("a Collator with time needs items with 'days', 'reference_day' and 'birth_day': pass "
                         "IndexBatches of a PatientDataset (collate.batched_view) or TruncatedDataset(..., "
                         "with_days=True) items")
    lengths = np.array([it["input_ids"].shape[0] for it in items], dtype=np.int64)
    return dict(tokens=[np.concatenate([_numpy(it[k]) for it in items]) for k in SEQ_KEYS],
                starts=np.cumsum(lengths) - lengths, lengths=lengths,
                index=np.array([it["index"] for it in items], dtype=np.int64),
                sex=np.array([it["sex"] for it in items], dtype=np.int64),
                plos_los=np.array([it["plos_los"] for it in items], dtype=np.int64) if need_plos else None,
                label=np.array([it["label"] for it in items], dtype=np.int64)
                if need_labels and "label" in items[0] else None,
                days=np.concatenate([_numpy(it["days"]) for it in items]) if need_time else None,
                reference=np.array([it["reference_day"] for it in items], dtype=np.int64) if need_time else None,
                birth=np.array([it["birth_day"] for it in items], dtype=np.int64) if need_time else None)


@dataclass
class Collator:
    """DataLoader collate_fn: `PatientDataset` items -> the model-input dict, masked, padded or packed.

    Returns (B, T) long `input_ids, token_type_ids, position_ids, age_ids, sex_ids, attention_mask`,
    plus `labels` (B, T) (MLM targets, -100 elsewhere) when `mlm` (pretraining), or `labels` (P,) from
    the items' task labels when not (fine-tuning); `plos_labels` (P,) when `plos_threshold` is set;
    `seq_ids` (B, T) when packing (patients 0..P-1 row-major, -1 padding); `time_ids` (B, T) when
    `time_buckets` > 0 (`time_ids_of`: codes from the history's last event, [CLS] from there to the day it
    is read, 0 on [SEP] and padding) and `time_values` (B, T, 2) float32 when `time2vec` (`time_values_of`,
    0 on padding); the model's config decides both. Masks are a hash of (seed,
    patient row, token position[, epoch]), so packed and padded layouts of the same patients get the same
    masks. Rows are padded to the next length bucket (`bucket_sizes`).

    Static masking (the default): `epoch` None, the same masks every epoch (an int pins that epoch's masks).
    Dynamic masking (`dynamic=True`): each batch is masked with the epoch the batch sampler stamped on it
    (`IndexBatch.epoch`). That stamp travels with the indices into every DataLoader worker, where this
    collator is a copy made at start-up whose own `epoch` never changes; `set_epoch` keeps `epoch`
    current for batches without a stamp, built in the main process (item lists, direct calls).
    """

    vocab_size: int = 0
    seed: int = 42
    epoch: int | None = None
    dynamic: bool = False
    mlm: bool = True
    mlm_probability: float = 0.15
    max_masked: int | None = None
    plos_threshold: int | None = None
    bucket_sizes: Sequence[int] = DEFAULT_BUCKETS
    pack_length: int | None = None  # set -> pack patients into rows of this many tokens
    time_buckets: int = 0  # > 0 -> also return time_ids (set it from the model's config.time_buckets)
    time2vec: bool = False  # True -> also return time_values (set it from the model's config.time2vec)
    return_index: bool = False
    mask_fn: Callable = field(default=mask_tokens, repr=False)  # benchmarks/throughput.py times it through this
    takes_index_batches = True  # class constant: `batched_view` hands it `IndexBatch`es (see ExMedTrainer)

    @classmethod
    def for_model(cls, config, **kwargs) -> "Collator":
        """A collator that builds the time inputs a model with this `config` takes (the config decides)."""
        return cls(time_buckets=config.time_buckets, time2vec=bool(getattr(config, "time2vec", False)), **kwargs)

    def __call__(self, items: IndexBatch | Sequence[dict]) -> dict[str, torch.Tensor]:
        need_plos, need_labels = self.plos_threshold is not None, not self.mlm
        need_ids, need_time = self.time_buckets > 0, self.time_buckets > 0 or self.time2vec
        cols = (items.columns(need_plos, need_labels, need_time) if isinstance(items, IndexBatch)
                else _item_columns(items, need_plos, need_labels, need_time))
        lengths = cols["lengths"]  # (P,) in input order
        p = len(lengths)
        if self.pack_length:
            row, off = pack_rows(lengths, max(self.pack_length, int(lengths.max())))
            order = np.lexsort((off, row))  # output patient order: row-major, by row then offset
            n_rows = int(row.max()) + 1
            used = np.bincount(row, weights=lengths, minlength=n_rows).astype(np.int64)  # (R,) tokens per row
            t = max(int(bucket_lengths([int(self.pack_length)], self.bucket_sizes)[0]), int(used.max()))
        else:
            order = np.arange(p)
            n_rows, used = p, lengths
            t = int(bucket_lengths([int(lengths.max())], self.bucket_sizes)[0])
        lengths = lengths[order]
        # Each row is filled from its start without gaps (a packed row's patients sit back to back), so
        # the real slots in row-major order are exactly the concatenated tokens in output order.
        real = np.arange(t)[None, :] < used[:, None]  # (R, T)
        dest = np.flatnonzero(real)  # (N,) slot of each output token in the row-major (R*T) grid
        tok_item = np.repeat(np.arange(p), lengths)  # (N,) output patient of each token
        first = np.cumsum(lengths) - lengths  # (P,) each patient's first token in the output
        within = np.arange(tok_item.size) - first[tok_item]  # (N,) position in its patient
        src = cols["starts"][order][tok_item] + within  # (N,) token in the flat source arrays
        index = cols["index"][order]
        # Rows of the (F, R*T) grid: 4 token fields, sex, [MLM labels], [time_ids], [seq_ids]. Each token field
        # is one gather from the flat source and one scatter into the grid (the cast to int64 happens there).
        n_fields = 5 + int(self.mlm) + int(need_ids) + int(bool(self.pack_length))
        grid = np.zeros((n_fields, n_rows * t), dtype=np.int64)
        for f, col in enumerate(cols["tokens"][1:], start=1):
            grid[f, dest] = col[src]
        grid[4, dest] = cols["sex"][order][tok_item]
        ids = cols["tokens"][0][src].astype(np.int64)  # (N,)
        if need_time:
            # times are read before masking: a masked or unknown code keeps its time
            days = cols["days"].astype(np.int64)
            day = days[src]  # (N,)
            last = days[cols["starts"][order] + lengths - 1][tok_item]  # (N,) day of the history's last token
            read = cols["reference"][order][tok_item]  # (N,)
            is_first = within == 0
        if need_ids:
            grid[5 + int(self.mlm), dest] = time_ids_of(day, last, read, grid[1, dest], is_first, self.time_buckets)
        if self.time2vec:
            values = np.zeros((n_rows * t, 2), dtype=np.float32)  # padding stays 0
            values[dest] = time_values_of(day, read, cols["birth"][order][tok_item], grid[3, dest], is_first)
        if self.mlm:
            # One (1, N) "packed row" with a per-token patient index: the mask depends only on
            # (patient, position), never on how the batch is laid out.
            tids = torch.from_numpy(ids)
            masked, mlm_labels = self.mask_fn(
                tids[None], (tids >= FIRST_CODE_ID)[None], torch.from_numpy(index[tok_item])[None],
                torch.from_numpy(within)[None], seed=self.seed, epoch=self.mask_epoch(items), vocab_size=self.vocab_size,
                mlm_probability=self.mlm_probability, max_masked=self.max_masked)
            ids = masked[0].numpy()
            grid[5] = -100
            grid[5, dest] = mlm_labels[0].numpy()
        grid[0, dest] = ids
        if self.pack_length:
            grid[-1] = -1
            grid[-1, dest] = tok_item  # seq_ids: patients are numbered in row-major order
        grid = torch.from_numpy(grid.reshape(n_fields, n_rows, t))
        out = dict(zip(SEQ_KEYS, grid[:4]))
        out["sex_ids"], out["attention_mask"] = grid[4], torch.from_numpy(real.astype(np.int64))
        if self.mlm:
            out["labels"] = grid[5]
        elif cols["label"] is not None:
            out["labels"] = torch.from_numpy(cols["label"][order].astype(np.int64))
        if need_ids:
            out["time_ids"] = grid[5 + int(self.mlm)]
        if self.time2vec:
            out["time_values"] = torch.from_numpy(values.reshape(n_rows, t, 2))
        if self.pack_length:
            out["seq_ids"] = grid[-1]
        if self.plos_threshold is not None:
            out["plos_labels"] = torch.from_numpy((cols["plos_los"][order] >= self.plos_threshold).astype(np.int64))
        if self.return_index:
            out["index"] = torch.from_numpy(index)
        return out

    def set_epoch(self, epoch: int) -> None:
        """The epoch of unstamped batches (dynamic masking only; static masks ignore epochs)."""
        if self.dynamic:
            self.epoch = int(epoch)

    def mask_epoch(self, items: IndexBatch | Sequence[dict]) -> int | None:
        """The epoch in this batch's mask hash: `epoch` (None: static) unless `dynamic`, then the batch's stamp."""
        if not self.dynamic:
            return self.epoch
        stamp = getattr(items, "epoch", None)
        if stamp is not None:
            return int(stamp)
        if torch.utils.data.get_worker_info() is not None:
            # this copy's `epoch` is whatever it was when the worker started: masks would silently stop changing
            raise RuntimeError("dynamic masking in a DataLoader worker needs batches stamped with their epoch: "
                               "use TokenBudgetBatchSampler (EpochBatch) over a PatientDataset, or num_workers=0")
        return self.epoch or 0
