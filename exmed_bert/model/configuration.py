"""ExMedBertConfig: every setting needed to rebuild an ExMed-BERT model from its config.json."""

from __future__ import annotations

from transformers import BertConfig

from exmed_bert.model.architecture import (ATTN_IMPLEMENTATIONS, INITIALIZATIONS, POOLING_TYPES, POSITION_TYPES,
                                           check_sizes)

# "eager" (what transformers falls back to) runs the same SDPA path
ACCEPTED_ATTN = (*ATTN_IMPLEMENTATIONS, "eager")


class ExMedBertConfig(BertConfig):
    """A `BertConfig` plus the claims-specific embeddings, the PLOS head and the initialisation scheme.

    Token types are 0 special, 1 diagnosis, 2 drug, 3 procedure. Ages are whole years 0..120. Sex is
    0 unknown, 1 female, 2 male. Positions are the visit index (0 = [CLS]), not the token index.
    `time_buckets` > 0 adds a table over how long before the end of the input history each code happened, and
    gives [CLS] the time from that end to the day the history is read (`exmed_bert.data.collate.time_ids_of`);
    0 (the default) builds no table and takes no `time_ids`. `time2vec` adds Time2Vec embeddings of each
    token's calendar day and age (`time_values`, CORE-BEHRT's continuous time); False builds none.

    `attn_implementation` (transformers' keyword, kept in `config._attn_implementation`, not written to
    config.json): "sdpa" (default) or "flex_attention" (a BlockMask per forward; no attention dropout, and on
    CPU forward only). See docs/MODEL.md.
    """

    model_type = "exmedbert"

    def __init__(
        self,
        vocab_size: int = 100,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 2,
        intermediate_size: int = 128,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 4,
        age_vocab_size: int = 121,
        sex_vocab_size: int = 3,
        position_embedding_type: str = "learned",
        code_embedding_size: int | None = None,
        clinvec_resize_method: str | None = None,
        plos_pooling: str = "cls",
        plos_weight: float = 1.0,
        classifier_pooling: str | None = None,
        class_weights: list[float] | None = None,
        initialization: str = "orthogonal",
        time_buckets: int = 0,
        time2vec: bool = False,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        mask_token_id: int = 4,
        **kwargs,
    ):
        kwargs.setdefault("tie_word_embeddings", code_embedding_size is None)
        super().__init__(
            vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
            hidden_act=hidden_act, hidden_dropout_prob=hidden_dropout_prob,
            attention_probs_dropout_prob=attention_probs_dropout_prob,
            max_position_embeddings=max_position_embeddings, type_vocab_size=type_vocab_size,
            layer_norm_eps=layer_norm_eps, pad_token_id=pad_token_id, **kwargs,
        )
        # BertConfig stores position_embedding_type for its own "absolute"/"relative_key" choice; ours
        # means something else (learned table vs fixed sinusoid over visit index), so set it after.
        self.position_embedding_type = position_embedding_type
        self.age_vocab_size = age_vocab_size
        self.sex_vocab_size = sex_vocab_size
        self.code_embedding_size = code_embedding_size
        # how ClinVec's vectors were brought to the code table's width, decided once when pretraining built
        # the model (clinvec.resize.resolve_method); None when the table did not start from ClinVec
        self.clinvec_resize_method = clinvec_resize_method
        self.plos_pooling = plos_pooling
        self.plos_weight = plos_weight
        self.classifier_pooling = classifier_pooling or plos_pooling  # fine-tuning pools like PLOS unless set
        self.class_weights = list(class_weights) if class_weights is not None else None
        self.initialization = initialization
        self.time_buckets = int(time_buckets)
        self.time2vec = bool(time2vec)
        self.mask_token_id = mask_token_id
        self._check()

    def _check(self) -> None:
        """Raise ValueError on settings the model cannot be built from (the CLI maps it to UserError)."""
        check_sizes(hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
                    num_hidden_layers=self.num_hidden_layers, intermediate_size=self.intermediate_size)
        for name, value, allowed in (("position_embedding_type", self.position_embedding_type, POSITION_TYPES),
                                     ("plos_pooling", self.plos_pooling, POOLING_TYPES),
                                     ("classifier_pooling", self.classifier_pooling, POOLING_TYPES),
                                     ("initialization", self.initialization, INITIALIZATIONS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        impl = getattr(self, "_attn_implementation", None)
        if impl is not None and impl not in ACCEPTED_ATTN:
            raise ValueError(f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, got {impl!r}")
        if self.time_buckets < 0 or self.time_buckets == 1:
            # bucket 0 is [CLS]/special/padding, so a table needs at least one bucket for real codes
            raise ValueError(f"time_buckets must be 0 (off) or at least 2, got {self.time_buckets}")
        if self.code_embedding_size is not None and self.code_embedding_size <= 0:
            raise ValueError(f"code_embedding_size must be positive or None, got {self.code_embedding_size}")
