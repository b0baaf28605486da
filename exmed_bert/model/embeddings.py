"""Input embeddings: code + token type + age + sex + visit position [+ time before the reference day], then
LayerNorm and dropout."""

from __future__ import annotations

import math

import torch
from torch import nn

from exmed_bert.model.configuration import ExMedBertConfig


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos table of "Attention is all you need", shape (num_positions, dim)."""
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table


class ExMedBertEmbeddings(nn.Module):
    def __init__(self, config: ExMedBertConfig):
        super().__init__()
        h = config.hidden_size
        e = config.code_embedding_size or h
        self.word_embeddings = nn.Embedding(config.vocab_size, e, padding_idx=config.pad_token_id)
        # ClinVec `learned_projection`: codes live in ClinVec's space (e.g. 128) and a trainable map brings
        # them to the hidden size.
        self.code_projection = nn.Linear(e, h) if config.code_embedding_size is not None else None
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.age_embeddings = nn.Embedding(config.age_vocab_size, h)
        self.sex_embeddings = nn.Embedding(config.sex_vocab_size, h)
        self.max_positions = config.max_position_embeddings
        if config.position_embedding_type == "learned":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        else:
            self.position_embeddings = None
            # Not persistent: rebuilt from the config, so checkpoints stay small and exact.
            self.register_buffer("sinusoid", sinusoidal_table(config.max_position_embeddings, h), persistent=False)
        # How long before the reference day (prediction date) each code happened, in log-spaced buckets; only
        # built when asked for, so models without it keep exactly their old parameters and init order.
        self.time_embeddings = nn.Embedding(config.time_buckets, h) if config.time_buckets > 0 else None
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.age_max = config.age_vocab_size - 1

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, age_ids: torch.Tensor | None = None,
                sex_ids: torch.Tensor | None = None, time_ids: torch.Tensor | None = None) -> torch.Tensor:
        """All inputs (B, T) long; returns (B, T, H). Missing optional inputs count as 0 (special/unknown),
        except `time_ids`: a model with time buckets refuses to run without them, and one without refuses them
        (either way the collator and the model disagree, and the scores would silently be wrong)."""
        x = self.word_embeddings(input_ids)  # (B, T, E)
        if self.code_projection is not None:
            x = self.code_projection(x)  # (B, T, H)
        if token_type_ids is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        if age_ids is not None:
            # Real extracts hold ages over 120 and negative ones from bad birth dates; clamp, never crash.
            x = x + self.age_embeddings(age_ids.clamp(0, self.age_max))
        if sex_ids is not None:
            x = x + self.sex_embeddings(sex_ids if sex_ids.dim() == 2 else sex_ids[:, None])  # (B,) -> (B, 1)
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        # Very long histories have more visits than the table: they share the last visit's embedding.
        position_ids = position_ids.clamp(0, self.max_positions - 1)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(position_ids)
        else:
            x = x + self.sinusoid.to(x.dtype)[position_ids]
        if self.time_embeddings is not None:
            if time_ids is None:
                raise ValueError("this model has time embeddings (config.time_buckets > 0) but got no time_ids; "
                                 "build batches with Collator(time_buckets=model.config.time_buckets)")
            x = x + self.time_embeddings(time_ids)
        elif time_ids is not None:
            raise ValueError("got time_ids but the model has no time embeddings (config.time_buckets = 0); "
                             "build batches with Collator(time_buckets=model.config.time_buckets)")
        return self.dropout(self.LayerNorm(x))
