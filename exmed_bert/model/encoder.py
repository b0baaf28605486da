"""A compact post-LayerNorm BERT encoder on PyTorch SDPA, with padding and packed (block-diagonal) masks.

Written out rather than reusing `transformers.BertEncoder` so that one boolean mask serves both padded
and packed rows, the Q/K/V projection is one matmul, and the graph stays simple for `torch.compile`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from exmed_bert.model.configuration import ExMedBertConfig


def _sdpa_backends() -> list:
    """SDPA kernels allowed on CUDA: flash, memory-efficient, math; not cuDNN. With a mask (our padded and
    packed batches always have one) torch 2.5+ tries cuDNN attention first on Hopper, which builds an
    execution plan for every new (batch, length) shape: 0.4-0.5 s each way, so length-bucketed batches ran
    10-20x slower in bf16 than in fp32 on an H200 (docs/PERFORMANCE.md; pytorch's known cuDNN-SDPA plan cost,
    e.g. modelscope/FunASR#3704)."""
    from torch.nn.attention import SDPBackend

    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    if q.is_cuda:
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(_sdpa_backends()):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def build_attention_mask(attention_mask: torch.Tensor | None, seq_ids: torch.Tensor | None) -> torch.Tensor | None:
    """Boolean SDPA mask, True = may attend.

    Packed rows (`seq_ids` (B, T), -1 on padding): (B, 1, T, T), a token sees only its own patient.
    Padding tokens share id -1, so they attend to each other and no query row is fully masked (which
    would give NaN), while real tokens never see them.
    Padded rows (`attention_mask` (B, T)): (B, 1, 1, T), a key-padding mask broadcast over queries.
    """
    if seq_ids is not None:
        return (seq_ids[:, :, None] == seq_ids[:, None, :])[:, None]
    if attention_mask is not None:
        return attention_mask.bool()[:, None, None, :]
    return None


class ExMedBertLayer(nn.Module):
    def __init__(self, config: ExMedBertConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(h, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, h)
        self.out_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attn_dropout = config.attention_probs_dropout_prob
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, nh, T, hd)
        a = attention(q, k, v, mask, self.attn_dropout if self.training else 0.0)
        a = a.transpose(1, 2).reshape(b, t, h)  # (B, T, H)
        x = self.attn_norm(x + self.dropout(self.attn_out(a)))
        return self.out_norm(x + self.dropout(self.output(self.act(self.intermediate(x)))))


class ExMedBertEncoder(nn.Module):
    def __init__(self, config: ExMedBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(ExMedBertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # The mask stays boolean: SDPA accepts it under bf16 autocast without any -inf arithmetic.
        for layer in self.layer:
            x = layer(x, mask)
        return x


def activation(name: str):
    if name in ("gelu", "gelu_new", "gelu_python"):
        return F.gelu
    if name == "relu":
        return F.relu
    if name == "silu":
        return F.silu
    raise ValueError(f"unsupported hidden_act {name!r}; use gelu, relu or silu")
