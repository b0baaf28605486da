"""Which batch samplers and collators a pretraining run uses, from its flags.

`--batch-size` is patients per batch (the guide); `--max-tokens-per-batch` switches to a token budget.
Both group patients of similar length (exmed_bert.training.batching), so little compute goes to padding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exmed_bert.errors import UserError


def make_sampler(lengths: np.ndarray, args: Any, shuffle: bool, seed: int):
    from exmed_bert.training.batching import TokenBudgetBatchSampler, bucket_lengths

    lengths = np.asarray(lengths)
    if args.max_tokens_per_batch:
        budget, cap = int(args.max_tokens_per_batch), None
    else:
        # a budget no bucket can reach: every batch is `batch_size` patients of one length bucket
        budget, cap = int(args.batch_size) * int(bucket_lengths([int(lengths.max())])[0]), int(args.batch_size)
    try:
        return TokenBudgetBatchSampler(lengths, max_tokens_per_batch=budget, shuffle=shuffle, seed=seed,
                                       max_batch_size=cap)
    except ValueError as e:
        raise UserError(str(e)) from None


def make_batching(args: Any, train_ds: Any, val_ds: Any, vocab_size: int):
    """(train batch sampler, eval batch sampler, train collator, eval collator)."""
    from exmed_bert.training.batching import PretrainCollator

    plos = int(args.plos_threshold) if args.plos else None
    # dynamic: each batch is masked with the epoch its sampler stamped on it, also inside DataLoader workers
    train = PretrainCollator(vocab_size=vocab_size, seed=args.seed, mlm_probability=args.mlm_probability,
                             plos_threshold=plos, dynamic=bool(args.dynamic_masking))
    # validation masks are fixed (and drawn with another seed than training's static masks)
    evaluate = PretrainCollator(vocab_size=vocab_size, seed=args.seed + 1, mlm_probability=args.mlm_probability,
                                plos_threshold=plos)
    return (make_sampler(train_ds.lengths, args, shuffle=True, seed=args.seed),
            make_sampler(val_ds.lengths, args, shuffle=False, seed=args.seed), train, evaluate)
