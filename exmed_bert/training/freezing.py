"""Which weights fine-tuning trains: all of them, the classifier head only (`--freeze-encoder`), the top N
encoder layers and the head (`--train-last-layers N`), or the head first and all later
(`--freeze-encoder-epochs`)."""

from __future__ import annotations

from torch import nn
from transformers import TrainerCallback


def freeze_for_finetuning(model: nn.Module, freeze_encoder: bool = False,
                          train_last_layers: int | None = None) -> list[str]:
    """Set `requires_grad` so only the head (and, with `train_last_layers`, the top N encoder layers) trains;
    returns the names of the frozen parameters. The Trainer's AdamW is built from trainable parameters
    only, so frozen ones get neither updates nor weight decay. Dropout stays on in frozen layers."""
    if not freeze_encoder and train_last_layers is None:
        return []
    layers = model.bert.encoder.layer
    keep = set() if freeze_encoder else {id(p) for layer in layers[len(layers) - train_last_layers:]
                                         for p in layer.parameters()}
    frozen = []
    for name, p in model.bert.named_parameters():
        if id(p) not in keep:
            p.requires_grad_(False)
            frozen.append(f"bert.{name}")
    return frozen


class FreezeEncoder(TrainerCallback):
    """Train only the classifier head for the first `epochs` epochs (the encoder's grads stay None,
    so AdamW skips it), then unfreeze everything."""

    def __init__(self, model, epochs: int):
        self.model, self.epochs = model, epochs

    def on_epoch_begin(self, args, state, control, **kwargs):
        frozen = (state.epoch or 0.0) + 1e-9 < self.epochs
        for p in self.model.bert.parameters():
            p.requires_grad_(not frozen)
