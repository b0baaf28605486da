"""Output heads and their outputs: sparse MLM head, per-patient pooling ([CLS] or masked mean), PLOS/classifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from exmed_bert.model.configuration import ExMedBertConfig
from exmed_bert.model.encoder import activation


@dataclass
class ExMedBertModelOutput(ModelOutput):
    """`last_hidden_state` (B, T, H); `pooled_output` (P, H), one row per patient ([CLS] or mean)."""

    last_hidden_state: torch.FloatTensor | None = None
    pooled_output: torch.FloatTensor | None = None


@dataclass
class ExMedBertPreTrainingOutput(ModelOutput):
    """Pretraining output. With MLM `labels`, logits exist only at the M masked positions:

    - `loss`: mlm_loss + plos_weight * plos_loss (scalar)
    - `mlm_loss`, `plos_loss`: the parts (scalars; plos_loss only with `plos_labels`)
    - `mlm_logits` (M, V) and `mlm_labels` (M,): the masked positions in row-major order, so accuracy and
      top-10 accuracy are `mlm_logits.argmax(-1) == mlm_labels` and `topk(10)` without recomputation.
      Without `labels`, `mlm_logits` is the full (B, T, V) table and `mlm_labels` is None.
    - `plos_logits` (P,): one PLOS logit per patient (P = B unless the batch is packed)
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    plos_loss: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    mlm_labels: torch.LongTensor | None = None
    plos_logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


class ExMedBertMLMHead(nn.Module):
    """BERT's LM head: dense -> act -> LayerNorm -> decoder over the code vocabulary (tied when possible)."""

    def __init__(self, config: ExMedBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., V). Called on the M gathered masked rows, (M, H), during pretraining."""
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden))))


class PooledHead(nn.Module):
    """dropout -> dense -> tanh -> dropout -> linear: BERT's pooler plus a classifier, on pooled patients."""

    def __init__(self, config: ExMedBertConfig, out_features: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.out = nn.Linear(config.hidden_size, out_features)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))  # (P, out)


def pool(hidden: torch.Tensor, mode: str, attention_mask: torch.Tensor | None = None,
         seq_ids: torch.Tensor | None = None, num_sequences: int | None = None) -> torch.Tensor:
    """One vector per patient from hidden (B, T, H); padding never contributes.

    Padded rows: (B, H) from token 0 ([CLS]) or the mean over `attention_mask`.
    Packed rows: `seq_ids` (B, T) hold 0..P-1 in row-major order (-1 = padding); returns (P, H) from
    each patient's first token or the mean of its tokens.
    """
    if seq_ids is None:
        if mode == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            return hidden.mean(1)
        m = attention_mask.to(hidden.dtype)[..., None]  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    h = hidden.reshape(-1, hidden.shape[-1])  # (B*T, H)
    seg = seq_ids.reshape(-1)
    p = int(num_sequences) if num_sequences is not None else int(seq_ids.max()) + 1
    out = hidden.new_zeros(p, hidden.shape[-1])
    if mode == "cls":
        prev = torch.cat([seq_ids.new_full((seq_ids.shape[0], 1), -2), seq_ids[:, :-1]], 1).reshape(-1)
        start = (seg >= 0) & (seg != prev)  # first token of each patient = its [CLS]
        return out.index_copy(0, seg[start], h[start])
    valid = seg >= 0
    sums = out.index_add(0, seg[valid], h[valid])
    counts = torch.bincount(seg[valid], minlength=p).clamp(min=1).to(hidden.dtype)
    return sums / counts[:, None]


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE over the M gathered positions, in fp32; 0 (not NaN) for a batch with nothing masked."""
    total = F.cross_entropy(logits.float(), labels, reduction="sum")
    return total / max(labels.numel(), 1)
