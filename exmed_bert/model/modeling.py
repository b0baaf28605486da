"""ExMed-BERT models: the encoder (ExMedBertModel), pretraining (MLM + PLOS) and sequence classification.
Importing this module registers them with transformers' Auto* factories (model_type "exmedbert").

Inputs (all (B, T) long): input_ids, token_type_ids, position_ids (visit index), age_ids, sex_ids
(or (B,)); attention_mask (B, T) for padded rows, or seq_ids (B, T) for packed rows (patients 0..P-1
row-major, -1 = padding; attention is block-diagonal over it); time_ids (B, T), only for a model with
`config.time_buckets` > 0, and time_values (B, T, 2) float (calendar day, age in days), only for a model
with `config.time2vec` (both built by exmed_bert.data.collate.Collator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining,
                          AutoModelForSequenceClassification, PreTrainedModel)
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from exmed_bert.model.configuration import ExMedBertConfig
from exmed_bert.model.embeddings import ExMedBertEmbeddings, Time2Vec, sinusoidal_table
from exmed_bert.model.encoder import ExMedBertEncoder, build_attention_mask
from exmed_bert.model.heads import (ExMedBertMLMHead, ExMedBertModelOutput, ExMedBertPreTrainingOutput,
                                    PooledHead, masked_lm_loss, pool)
from exmed_bert.model.init import init_module


class ExMedBertPreTrainedModel(PreTrainedModel):
    config_class = ExMedBertConfig
    config: ExMedBertConfig
    base_model_prefix = "bert"
    # forward() averages its own loss; tell the Trainer not to skip gradient-accumulation scaling
    accepts_loss_kwargs = False
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    # config._attn_implementation: "sdpa" (default) or "flex_attention" (exmed_bert/model/encoder.py); a load-time
    # choice as in transformers (`from_pretrained(..., attn_implementation=...)`), not saved in config.json
    _supports_sdpa = True
    _supports_flex_attn = True

    def _init_weights(self, module: nn.Module) -> None:
        init_module(module, self.config.initialization)
        if isinstance(module, ExMedBertEmbeddings) and module.position_embeddings is None:
            # Non-persistent buffer: from_pretrained builds the model on the meta device, so refill it here.
            init.copy_(module.sinusoid, sinusoidal_table(*module.sinusoid.shape))
        if isinstance(module, Time2Vec):
            frequency, phase = module.initial_values()
            init.copy_(module.frequency, frequency)
            init.copy_(module.phase, phase)


class ExMedBertModel(ExMedBertPreTrainedModel):
    """Embeddings + encoder. Returns the hidden states and one pooled vector per patient."""

    def __init__(self, config: ExMedBertConfig):
        super().__init__(config)
        self.embeddings = ExMedBertEmbeddings(config)
        self.encoder = ExMedBertEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                age_ids: torch.Tensor | None = None, sex_ids: torch.Tensor | None = None,
                seq_ids: torch.Tensor | None = None,
                pooling: str | None = None, num_sequences: int | None = None,
                time_ids: torch.Tensor | None = None, time_values: torch.Tensor | None = None,
                **_unused) -> ExMedBertModelOutput:
        if attention_mask is None and seq_ids is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        x = self.embeddings(input_ids, token_type_ids, position_ids, age_ids, sex_ids, time_ids, time_values)  # (B,T,H)
        # one mask (a bool tensor for SDPA, a BlockMask for FlexAttention) shared by all layers
        x = self.encoder(x, build_attention_mask(attention_mask, seq_ids, self.config._attn_implementation))
        pooled = pool(x, pooling or self.config.plos_pooling, attention_mask, seq_ids, num_sequences)
        return ExMedBertModelOutput(last_hidden_state=x, pooled_output=pooled)


class ExMedBertForPreTraining(ExMedBertPreTrainedModel):
    """Masked-code prediction (logits only at masked positions) + optional PLOS (BCE) head."""

    _tied_weights_keys = {"cls.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: ExMedBertConfig):
        super().__init__(config)
        self.bert = ExMedBertModel(config)
        self.cls = ExMedBertMLMHead(config)
        self.plos = PooledHead(config, 1)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.cls.decoder = value

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                age_ids: torch.Tensor | None = None, sex_ids: torch.Tensor | None = None,
                seq_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, plos_labels: torch.Tensor | None = None,
                time_ids: torch.Tensor | None = None, time_values: torch.Tensor | None = None,
                return_hidden: bool = False, **_unused) -> ExMedBertPreTrainingOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, age_ids, sex_ids, seq_ids,
                        num_sequences=None if plos_labels is None else plos_labels.shape[0], time_ids=time_ids,
                        time_values=time_values)
        hidden = out.last_hidden_state  # (B, T, H)
        loss = mlm_loss = plos_loss = mlm_labels = None
        if labels is not None:
            picked = labels != -100  # (B, T)
            mlm_labels = labels[picked]  # (M,)
            mlm_logits = self.cls(hidden[picked])  # (M, V): the decoder never sees unmasked positions
            mlm_loss = loss = masked_lm_loss(mlm_logits, mlm_labels)
        else:
            mlm_logits = self.cls(hidden)  # (B, T, V), inference only
        plos_logits = self.plos(out.pooled_output).squeeze(-1)  # (P,)
        if plos_labels is not None:
            plos_loss = F.binary_cross_entropy_with_logits(plos_logits.float(), plos_labels.float())
            weighted = self.config.plos_weight * plos_loss
            loss = weighted if loss is None else loss + weighted
        elif loss is not None:
            # Without --plos the PLOS head still gets a (zero) gradient, so DDP finds no unused parameters.
            loss = loss + 0.0 * plos_logits.sum()
        return ExMedBertPreTrainingOutput(loss=loss, mlm_loss=mlm_loss, plos_loss=plos_loss, mlm_logits=mlm_logits,
                                          mlm_labels=mlm_labels, plos_logits=plos_logits,
                                          last_hidden_state=hidden if return_hidden else None)


class ExMedBertForSequenceClassification(ExMedBertPreTrainedModel):
    """Patient-level classifier on the pooled encoder output.

    num_labels == 1: one logit, BCE (labels 0/1). num_labels >= 2: cross-entropy, optionally weighted by
    `config.class_weights` or the `class_weights` argument (e.g. inverse class frequency).
    """

    def __init__(self, config: ExMedBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = ExMedBertModel(config)
        self.classifier = PooledHead(config, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                age_ids: torch.Tensor | None = None, sex_ids: torch.Tensor | None = None,
                seq_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, class_weights: torch.Tensor | None = None,
                time_ids: torch.Tensor | None = None, time_values: torch.Tensor | None = None,
                **_unused) -> SequenceClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, age_ids, sex_ids, seq_ids,
                        pooling=self.config.classifier_pooling,
                        num_sequences=None if labels is None else labels.shape[0], time_ids=time_ids,
                        time_values=time_values)
        logits = self.classifier(out.pooled_output)  # (P, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.binary_cross_entropy_with_logits(logits.squeeze(-1).float(), labels.float())
            else:
                if class_weights is None and self.config.class_weights is not None:
                    class_weights = torch.tensor(self.config.class_weights, device=logits.device)
                weight = None if class_weights is None else class_weights.float().to(logits.device)
                loss = F.cross_entropy(logits.float(), labels.long(), weight=weight)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def count_parameters(model: nn.Module, exclude_embeddings: bool = False, trainable_only: bool = False) -> int:
    """Number of parameters, each shared tensor counted once.

    `exclude_embeddings=True` drops every embedding table (code, type, age, sex, position, time) and the untied
    MLM decoder over the vocabulary, matching how the guide's preset table counts.
    """
    seen: set[int] = set()
    skip: set[int] = set()
    if exclude_embeddings:
        for module in model.modules():
            if isinstance(module, nn.Embedding):
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


AutoConfig.register("exmedbert", ExMedBertConfig, exist_ok=True)
AutoModel.register(ExMedBertConfig, ExMedBertModel, exist_ok=True)
AutoModelForPreTraining.register(ExMedBertConfig, ExMedBertForPreTraining, exist_ok=True)
AutoModelForMaskedLM.register(ExMedBertConfig, ExMedBertForPreTraining, exist_ok=True)
AutoModelForSequenceClassification.register(ExMedBertConfig, ExMedBertForSequenceClassification, exist_ok=True)
