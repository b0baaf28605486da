"""Model-size presets from the training guide, explicit-flag overrides, validation and parameter counts."""

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


def resolve_architecture(preset: str | None = "small", **explicit) -> dict:
    """The preset's sizes, with every explicit non-None value overriding it.

    `resolve_architecture("small", hidden_size=96, num_attention_heads=None)` -> small with hidden 96.
    Keys other than the four sizes (dropout, max_position_embeddings, ...) pass through when not None.
    Raises UserError on an unknown preset or an inconsistent result.
    """
    if preset is None:
        arch = dict(PRESETS["small"])
    else:
        key = preset.lower()
        if key not in PRESETS:
            raise UserError(f"unknown model size {preset!r}; choose one of {', '.join(PRESETS)}")
        arch = dict(PRESETS[key])
    arch.update({k: v for k, v in explicit.items() if v is not None})
    validate_architecture(**arch)
    return arch


def validate_architecture(*, hidden_size: int, num_attention_heads: int, num_hidden_layers: int = 1,
                          intermediate_size: int = 1, **_ignored) -> None:
    """Raise UserError naming the flag to change when the sizes cannot build a model."""
    for name, value in (("hidden-size", hidden_size), ("num-attention-heads", num_attention_heads),
                        ("num-hidden-layers", num_hidden_layers), ("intermediate-size", intermediate_size)):
        if int(value) <= 0:
            raise UserError(f"--{name} must be a positive integer, got {value}")
    if hidden_size % num_attention_heads:
        ok = [h for h in range(1, hidden_size + 1) if hidden_size % h == 0]
        near = min(ok, key=lambda h: (abs(h - num_attention_heads), h))
        raise UserError(f"--hidden-size {hidden_size} is not divisible by --num-attention-heads "
                        f"{num_attention_heads}; use e.g. --num-attention-heads {near}")


def count_parameters(model, exclude_embeddings: bool = False, trainable_only: bool = False) -> int:
    """Number of parameters, each shared tensor counted once.

    `exclude_embeddings=True` drops every embedding table (code, type, age, sex, position, region) and
    the untied MLM decoder over the vocabulary, matching how the guide's preset table counts.
    """
    import torch

    seen: set[int] = set()
    skip: set[int] = set()
    if exclude_embeddings:
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                skip.add(id(module.weight))
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out is not None:
            skip.update({id(out.weight)} | ({id(out.bias)} if getattr(out, "bias", None) is not None else set()))
    total = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
