"""Padded batches for fine-tuning and evaluation: `ds[i]` items -> the model-input dict.

The pretraining fast path (length buckets, packing) lives in exmed_bert.training and reuses
`mask_tokens`; this collator can also mask, for simple MLM evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from exmed_bert.data.masking import mask_tokens
from exmed_bert.data.vocab import FIRST_CODE_ID, PAD_ID

SEQ_KEYS = ("input_ids", "token_type_ids", "position_ids", "age_ids")


def pad_batch(items: list[dict], pad_to_multiple_of: int | None = 8, plos_threshold: int | None = None,
              return_index: bool = False) -> dict:
    """Pad to the batch's longest patient (rounded up to a multiple). All (B, T) outputs are long.

    Returns input_ids, token_type_ids, position_ids, age_ids, sex_ids, attention_mask, plus labels (B,)
    when items carry a label, plos_labels (B,) when plos_threshold is given and index (B,) (dataset
    rows) when return_index is set. Only model inputs are returned by default, so `model(**batch)` works.
    """
    lengths = [len(it["input_ids"]) for it in items]
    t = max(lengths)
    if pad_to_multiple_of:
        t = -(-t // pad_to_multiple_of) * pad_to_multiple_of
    b = len(items)
    out = {k: torch.full((b, t), PAD_ID, dtype=torch.long) for k in SEQ_KEYS}
    mask = torch.zeros((b, t), dtype=torch.long)
    for r, (it, n) in enumerate(zip(items, lengths)):
        for k in SEQ_KEYS:
            out[k][r, :n] = it[k]
        mask[r, :n] = 1
    sex = torch.tensor([it["sex"] for it in items], dtype=torch.long)
    out["sex_ids"] = sex[:, None] * mask
    out["attention_mask"] = mask
    if return_index:
        out["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
    if "label" in items[0]:
        out["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
    if plos_threshold is not None:
        out["plos_labels"] = torch.tensor([int(it["plos_los"] >= plos_threshold) for it in items], dtype=torch.long)
    return out


@dataclass
class PaddedCollator:
    """DataLoader collate_fn. With `mlm=True` it masks codes (static unless `epoch` is set) and puts the
    MLM targets in `labels`, dropping any task label."""

    pad_to_multiple_of: int | None = 8
    plos_threshold: int | None = None
    mlm: bool = False
    vocab_size: int = 0
    seed: int = 42
    epoch: int | None = None
    mlm_probability: float = 0.15
    max_masked: int | None = None

    def __call__(self, items: list[dict]) -> dict:
        batch = pad_batch(items, self.pad_to_multiple_of, self.plos_threshold)
        if self.mlm:
            ids = batch["input_ids"]
            position = torch.arange(ids.shape[1]).expand_as(ids)
            index = torch.tensor([it["index"] for it in items], dtype=torch.long)
            batch["input_ids"], batch["labels"] = mask_tokens(
                ids, ids >= FIRST_CODE_ID, index, position, seed=self.seed, epoch=self.epoch,
                vocab_size=self.vocab_size, mlm_probability=self.mlm_probability, max_masked=self.max_masked)
        return batch
