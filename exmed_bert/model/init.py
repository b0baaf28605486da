"""Weight initialisation schemes (`--initialization orthogonal|xavier|kaiming`) for linear and embedding weights."""

from __future__ import annotations

import math

from torch import nn
from transformers import initialization as init  # these skip tensors already loaded by from_pretrained


def init_module(module: nn.Module, scheme: str) -> None:
    """Initialise one module in place; LayerNorm -> (1, 0), biases -> 0, the padding row -> 0."""
    if isinstance(module, nn.Linear):
        _init_matrix(module.weight, scheme)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        # A table with more rows than columns gets orthonormal *columns*, i.e. rows of norm sqrt(dim/rows):
        # a 3,000-code table would start ~7x weaker than the 4-row type table it is summed with. The gain
        # gives every table rows of about unit norm, so each input starts with a comparable say.
        rows, dim = module.weight.shape
        gain = math.sqrt(max(1.0, rows / dim)) if scheme == "orthogonal" else 1.0
        _init_matrix(module.weight, scheme, gain=gain)
        if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
            init.zeros_(module.weight[module.padding_idx])
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)


def _init_matrix(weight, scheme: str, gain: float = 1.0) -> None:
    if scheme == "orthogonal":
        init.orthogonal_(weight, gain=gain)
    elif scheme == "xavier":
        init.xavier_uniform_(weight)
    elif scheme == "kaiming":
        # GELU behaves like ReLU for the variance argument; fan_in keeps activations' scale per layer.
        init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    else:
        raise ValueError(f"initialization must be orthogonal, xavier or kaiming, got {scheme!r}")
