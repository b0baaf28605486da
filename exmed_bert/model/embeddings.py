"""Input embeddings: code + token type + age + sex + visit position [+ time buckets] [+ Time2Vec of calendar day
and age], then LayerNorm and dropout."""

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


DAYS_PER_YEAR = 365.25
# Time2Vec inputs are days; periods (days) its frequencies start log-spaced between, per input. Calendar
# days are centred on 2000-01-01 (day 10,957) so the linear feature stays small for real dates.
CALENDAR_PERIODS, AGE_PERIODS = (7.0, 100 * DAYS_PER_YEAR), (DAYS_PER_YEAR / 4, 200 * DAYS_PER_YEAR)
CALENDAR_CENTRE = 10_957.0


class Time2Vec(nn.Module):
    """Time2Vec (Kazemi et al. 2019) of a time in days, as CORE-BEHRT embeds age and absolute position:
    feature 0 is linear in t, features 1..H-1 are sin(w t + b). The phases b are learned, starting as sin/cos
    pairs; the frequencies w are fixed, periods log-spaced in `periods` (days) like the sinusoidal table:
    learned, a step of 1e-3 on a weekly frequency moves the phase of a calendar day (~10^4) by ~10 radians,
    and pretraining stopped learning (masked top-10 accuracy at the unigram baseline). The output is scaled
    so its norm starts near 1, as the embedding rows it is summed with."""

    def __init__(self, dim: int, periods: tuple[float, float], centre: float = 0.0):
        super().__init__()
        self.periods, self.centre = periods, centre
        # not persistent: rebuilt from the periods, like the sinusoidal position table
        self.register_buffer("frequency", torch.empty(dim), persistent=False)
        self.phase = nn.Parameter(torch.empty(dim))
        self.scale = math.sqrt(2.0 / dim)
        self.reset_parameters()

    def initial_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(frequency, phase), (H,) each: the linear feature at 1 / longest period, then sin/cos pairs."""
        dim = self.frequency.shape[0]
        lo, hi = self.periods
        pairs = max(dim // 2, 1)  # enough sin/cos pairs for the dim - 1 periodic features
        period = torch.logspace(math.log10(lo), math.log10(hi), pairs)
        freq = (2 * math.pi / period).repeat_interleave(2)[: dim - 1]
        phase = torch.tensor([0.0, math.pi / 2]).repeat(pairs)[: dim - 1]  # sin, cos, sin, cos ...
        return torch.cat([torch.tensor([1.0 / hi]), freq]), torch.cat([torch.zeros(1), phase])

    def reset_parameters(self) -> None:
        freq, phase = self.initial_values()
        with torch.no_grad():
            self.frequency.copy_(freq)
            self.phase.copy_(phase)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B, T) days -> (B, T, H), in fp32 (calendar days times a weekly frequency need its precision)."""
        z = (t.float() - self.centre)[..., None] * self.frequency.float() + self.phase.float()  # (B, T, H)
        return self.scale * torch.cat([z[..., :1], torch.sin(z[..., 1:])], dim=-1)


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
        # Continuous time (config.time2vec): each token's calendar day and age in days (`time_values`).
        self.calendar_time = Time2Vec(h, CALENDAR_PERIODS, CALENDAR_CENTRE) if config.time2vec else None
        self.age_time = Time2Vec(h, AGE_PERIODS) if config.time2vec else None
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.age_max = config.age_vocab_size - 1

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, age_ids: torch.Tensor | None = None,
                sex_ids: torch.Tensor | None = None, time_ids: torch.Tensor | None = None,
                time_values: torch.Tensor | None = None) -> torch.Tensor:
        """All inputs (B, T) long, `time_values` (B, T, 2) float (calendar day, age in days); returns (B, T, H).
        Missing optional inputs count as 0 (special/unknown), except the time inputs: a model with time
        buckets or Time2Vec refuses to run without them, and one without refuses them (either way the
        collator and the model disagree, and the scores would silently be wrong)."""
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
        if self.calendar_time is not None:
            if time_values is None:
                raise ValueError("this model has Time2Vec embeddings (config.time2vec) but got no time_values; "
                                 "build batches with Collator(time2vec=model.config.time2vec)")
            x = x + (self.calendar_time(time_values[..., 0]) + self.age_time(time_values[..., 1])).to(x.dtype)
        elif time_values is not None:
            raise ValueError("got time_values but the model has no Time2Vec embeddings (config.time2vec = False); "
                             "build batches with Collator(time2vec=model.config.time2vec)")
        return self.dropout(self.LayerNorm(x))
