"""A compact post-LayerNorm BERT encoder on PyTorch SDPA or FlexAttention, with padding and packed masks.

Written out rather than reusing `transformers.BertEncoder` so that one mask, built once per forward, serves
both padded and packed rows in every layer, the Q/K/V projection is one matmul, and the graph stays simple
for `torch.compile`. `config._attn_implementation` ("sdpa", the default, or "flex_attention") picks the kernel.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from exmed_bert.model.configuration import ExMedBertConfig

AttentionMask = torch.Tensor | BlockMask | None
FLEX_COMPILE_DYNAMIC: bool | None = True  # see _compiled_flex; benchmarks/throughput.py --flex-dynamic sets it


def _sdpa_backends() -> list:
    """SDPA kernels allowed on CUDA: flash, memory-efficient, math; not cuDNN. With a mask (our padded and
    packed batches always have one) torch 2.5+ tries cuDNN attention first on Hopper, which builds an
    execution plan for every new (batch, length) shape: 0.4-0.5 s each way, so length-bucketed batches ran
    10-20x slower in bf16 than in fp32 on an H200 (docs/PERFORMANCE.md; pytorch's known cuDNN-SDPA plan cost,
    e.g. modelscope/FunASR#3704)."""
    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@functools.cache
def _compiled_flex():
    """flex_attention compiled once per process. Only the compiled form is a fused kernel; eager
    flex_attention materialises the (B, nh, T, T) scores. dynamic=True: batch and length are symbolic from the
    first call, so 14 length buckets and the short last batch of an epoch reuse one graph instead of
    recompiling (after 8 recompilations dynamo would fall back to the eager, materialising form)."""
    return torch.compile(flex_attention, dynamic=FLEX_COMPILE_DYNAMIC)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, dropout_p: float) -> torch.Tensor:
    """(B, nh, T, hd) -> (B, nh, T, hd). A `BlockMask` runs FlexAttention, a boolean mask (or None) SDPA."""
    if isinstance(mask, BlockMask):
        return flex(q, k, v, mask, dropout_p)
    if q.is_cuda:
        with sdpa_kernel(_sdpa_backends()):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask, dropout_p: float) -> torch.Tensor:
    """FlexAttention: compiled on CUDA; on CPU the eager reference, forward only (torch has no CPU backward)."""
    if dropout_p > 0:
        # as transformers' flex_attention integration: the kernel has no dropout on attention probabilities
        raise ValueError("attn_implementation='flex_attention' has no attention dropout: set "
                         "attention_probs_dropout_prob=0 (--attention-probs-dropout-prob 0), call model.eval(), "
                         "or use attn_implementation='sdpa'")
    if q.is_cuda:
        if torch.compiler.is_compiling():  # inside a torch.compile'd model: traced into its graph as is
            return flex_attention(q, k, v, block_mask=block_mask)
        return _compiled_flex()(q, k, v, block_mask=block_mask)
    if q.requires_grad:
        raise RuntimeError(f"attn_implementation='flex_attention' cannot train on {q.device.type}: torch "
                           f"{torch.__version__} has no FlexAttention backward there; train with "
                           "attn_implementation='sdpa' (--attn-implementation sdpa), or run flex under torch.no_grad()")
    with warnings.catch_warnings():  # the eager reference is what we want here; its "use torch.compile" hint is noise
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask)


def build_attention_mask(attention_mask: torch.Tensor | None, seq_ids: torch.Tensor | None,
                         implementation: str | None = "sdpa") -> AttentionMask:
    """The mask every layer uses, built once per forward. Same semantics for both kernels:

    Packed rows (`seq_ids` (B, T), -1 on padding): a token sees only its own patient. Padding tokens share
    id -1, so they attend to each other and no query row is fully masked (which would give NaN in SDPA),
    while real tokens never see them.
    Padded rows (`attention_mask` (B, T)): a key-padding mask; every query sees the real keys of its row.

    SDPA gets a boolean mask, True = may attend: (B, 1, T, T) packed, (B, 1, 1, T) padded.
    FlexAttention gets a `BlockMask` (B, 1, T, T): blocks of 128x128 that hold no allowed pair are
    skipped, so a packed row of ~100-token patients computes a band around the diagonal, not T x T.
    """
    if implementation == "flex_attention":
        return _block_mask(attention_mask, seq_ids)
    if seq_ids is not None:
        return (seq_ids[:, :, None] == seq_ids[:, None, :])[:, None]
    if attention_mask is not None:
        return attention_mask.bool()[:, None, None, :]
    return None


def _block_mask(attention_mask: torch.Tensor | None, seq_ids: torch.Tensor | None) -> BlockMask | None:
    if seq_ids is not None:
        def same_patient(b, h, q, kv):
            return seq_ids[b, q] == seq_ids[b, kv]

        b, t = seq_ids.shape
        return create_block_mask(same_patient, b, None, t, t, device=seq_ids.device)
    if attention_mask is not None:
        keep = attention_mask.bool()

        def real_key(b, h, q, kv):
            return keep[b, kv]

        b, t = keep.shape
        return create_block_mask(real_key, b, None, t, t, device=keep.device)
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

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
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

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        # The SDPA mask stays boolean: SDPA accepts it under bf16 autocast without any -inf arithmetic.
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
