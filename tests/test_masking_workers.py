"""Dynamic masking through DataLoader workers: masks change every epoch in every worker and repeat for a
fixed seed, whatever the number of workers. Runs the real `ExMedTrainer` loop (accelerate-prepared
loader, persistent workers, the epoch callbacks) on a tiny model and records each batch's MLM targets."""

from __future__ import annotations


import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from exmed_bert.data.collate import batched_view
from exmed_bert.model.modeling import ExMedBertConfig, ExMedBertForPreTraining
from exmed_bert.training.args import PretrainArgs
from exmed_bert.training.pretrain import make_batching
from exmed_bert.training.trainer import ExMedTrainer
from test_batching import V, make_dataset

EPOCHS = 2
Masks = list[dict[int, tuple[int, ...]]]  # per epoch: patient row -> positions of its MLM targets


class _RecordingTrainer(ExMedTrainer):
    """Records which positions of which patient each training batch masks, then trains as usual."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.masks: Masks = []
        self.workers_seen: list[set[int]] = []
        self.add_callback(_NewEpoch(self))

    def compute_loss(self, model, inputs, *args, **kwargs):
        index = inputs.pop("index").tolist()
        worker = inputs.pop("worker")
        self.workers_seen[-1].add(int(worker))
        for row, patient in enumerate(index):
            assert patient not in self.masks[-1], "a patient appeared twice in one epoch"
            self.masks[-1][patient] = tuple(torch.nonzero(inputs["labels"][row] != -100).flatten().tolist())
        return super().compute_loss(model, inputs, *args, **kwargs)


class _NewEpoch(TrainerCallback):
    def __init__(self, trainer: _RecordingTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.masks.append({})
        self.trainer.workers_seen.append(set())


class _TagWorker:
    """The run's collator, plus the id of the DataLoader worker that built the batch (-1: main process)."""

    def __init__(self, collator):
        self.collator = collator
        self.takes_index_batches = collator.takes_index_batches

    def set_epoch(self, epoch: int) -> None:
        self.collator.set_epoch(epoch)

    def __call__(self, items) -> dict:
        info = torch.utils.data.get_worker_info()
        return {**self.collator(items), "worker": torch.tensor(-1 if info is None else info.id)}


def masks_of_a_run(tmp_path, seed: int, workers: int) -> tuple[Masks, list[set[int]]]:
    """Train 2 epochs with dynamic masking through `workers` DataLoader workers; the masks each epoch saw."""
    ds = make_dataset(24, seed=4, labels=False)
    flags = PretrainArgs(seed=seed, dynamic_masking=True, batch_size=4)
    train_sampler, _, collator, _ = make_batching(flags, ds, ds, V)
    collator.return_index = True
    torch.manual_seed(0)
    model = ExMedBertForPreTraining(ExMedBertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=1, intermediate_size=32))
    targs = TrainingArguments(output_dir=str(tmp_path / f"run_{seed}_{workers}"), num_train_epochs=EPOCHS,
                              per_device_train_batch_size=4, learning_rate=1e-3, seed=seed, use_cpu=True,
                              dataloader_num_workers=workers, save_strategy="no", eval_strategy="no",
                              logging_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False)
    trainer = _RecordingTrainer(model=model, args=targs, train_dataset=ds, data_collator=_TagWorker(collator),
                                train_batch_sampler=train_sampler)
    trainer.train()
    assert len(trainer.masks) == EPOCHS
    for epoch in trainer.masks:
        assert sorted(epoch) == list(range(len(ds)))  # every patient once per epoch
    return trainer.masks, trainer.workers_seen


def long_patients(masks: Masks) -> list[int]:
    """Patients with enough masked codes that two independent masks coincide with negligible chance."""
    return [p for p, pos in masks[0].items() if len(pos) >= 3]


def test_dynamic_masks_change_every_epoch_in_every_worker_and_repeat_per_seed(tmp_path):
    masks, workers_seen = masks_of_a_run(tmp_path, seed=3, workers=2)
    assert all(seen == {0, 1} for seen in workers_seen)  # both workers built batches in both epochs
    long = long_patients(masks)
    assert len(long) >= 10
    # (a) new masks in epoch 1 for every patient, whichever worker built its batch (a worker whose collator
    # still held epoch 0 would repeat epoch 0's masks exactly)
    assert [p for p in long if masks[0][p] == masks[1][p]] == []
    # (b) the same seed gives the same masks, epoch by epoch, with two workers or none
    again, _ = masks_of_a_run(tmp_path, seed=3, workers=2)
    assert again == masks
    single, single_workers = masks_of_a_run(tmp_path, seed=3, workers=0)
    assert all(seen == {-1} for seen in single_workers)
    assert single == masks
    # (c) another seed, other masks
    other, _ = masks_of_a_run(tmp_path, seed=4, workers=2)
    assert sum(other[e][p] != masks[e][p] for e in range(EPOCHS) for p in long) >= 0.9 * EPOCHS * len(long)


def test_dynamic_collator_refuses_untagged_batches_in_a_worker():
    """A batch sampler that does not stamp its batches with the epoch would make a worker's masks static
    again without a sound; the collator says so instead."""
    ds = make_dataset(8, seed=4, labels=False)
    flags = PretrainArgs(seed=3, dynamic_masking=True, batch_size=4)
    _, _, collator, _ = make_batching(flags, ds, ds, V)
    plain = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(ds), batch_size=4, drop_last=False)
    loader = torch.utils.data.DataLoader(batched_view(ds, collator), batch_sampler=plain, collate_fn=collator,
                                         num_workers=1)
    with pytest.raises(RuntimeError, match="epoch"):
        next(iter(loader))
