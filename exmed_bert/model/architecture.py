"""What an ExMed-BERT architecture may be: the guide's size presets, the choice lists ExMedBertConfig
accepts, and the one place a preset and explicit sizes resolve into four checked numbers.

No torch here: config.yaml, --help and the wizard read it. `ExMedBertConfig` (configuration.py) checks
its sizes with the same `check_sizes`.
"""

from __future__ import annotations

from exmed_bert.errors import UserError

# (layers, hidden, intermediate, heads), the guide's "Model Size Presets" table.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=1),
    "small": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2),
    "medium": dict(num_hidden_layers=4, hidden_size=128, intermediate_size=256, num_attention_heads=4),
    "large": dict(num_hidden_layers=6, hidden_size=288, intermediate_size=576, num_attention_heads=6),
}
ARCH_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")


def preset_for_hidden_size(hidden_size: int) -> str:
    """The preset whose hidden size is nearest (a fine-tuned model knows its sizes, not its preset)."""
    return min(PRESETS, key=lambda name: (abs(PRESETS[name]["hidden_size"] - hidden_size), name))
INITIALIZATIONS = ("orthogonal", "xavier", "kaiming")
POSITION_TYPES = ("learned", "sinusoidal")  # a learned table over visit index, or the fixed sin/cos one
POOLING_TYPES = ("cls", "mean")             # one vector per patient: [CLS], or the mean of its tokens
ATTN_IMPLEMENTATIONS = ("sdpa", "flex_attention")  # transformers' `attn_implementation` names we run


def resolve_architecture(preset: str, **explicit: int | None) -> dict[str, int]:
    """The preset's four sizes, each explicit non-None value overriding its own, checked.

    `resolve_architecture("small", hidden_size=96, num_attention_heads=None)` -> small with hidden 96.
    Raises UserError on an unknown preset or sizes that cannot build a model.
    """
    if preset.lower() not in PRESETS:
        raise UserError(f"unknown model size {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = set(explicit) - set(ARCH_KEYS)
    if unknown:
        raise TypeError(f"resolve_architecture: unknown size keys {sorted(unknown)}")
    arch = {**PRESETS[preset.lower()], **{k: int(v) for k, v in explicit.items() if v is not None}}
    try:
        check_sizes(**arch)
    except ValueError as e:
        raise UserError(str(e)) from None
    return arch


def check_sizes(*, hidden_size: int, num_attention_heads: int, num_hidden_layers: int = 1,
                intermediate_size: int = 1) -> None:
    """ValueError naming the flag to change when the sizes cannot build a model."""
    for name, value in (("hidden-size", hidden_size), ("num-attention-heads", num_attention_heads),
                        ("num-hidden-layers", num_hidden_layers), ("intermediate-size", intermediate_size)):
        if int(value) <= 0:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    if hidden_size % num_attention_heads:
        divisors = [h for h in range(1, hidden_size + 1) if hidden_size % h == 0]
        near = min(divisors, key=lambda h: (abs(h - num_attention_heads), h))
        raise ValueError(f"--hidden-size {hidden_size} is not divisible by --num-attention-heads "
                         f"{num_attention_heads}; use e.g. --num-attention-heads {near}")
