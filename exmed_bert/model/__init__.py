"""The ExMed-BERT model package; importing it registers the classes with transformers' Auto* factories."""

from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining,
                          AutoModelForSequenceClassification)

from exmed_bert.model.configuration import ExMedBertConfig
from exmed_bert.model.heads import ExMedBertModelOutput, ExMedBertPreTrainingOutput, pool
from exmed_bert.model.modeling import (ExMedBertForPreTraining, ExMedBertForSequenceClassification,
                                       ExMedBertModel, ExMedBertPreTrainedModel)
from exmed_bert.model.presets import PRESETS, count_parameters, resolve_architecture, validate_architecture

AutoConfig.register("exmedbert", ExMedBertConfig, exist_ok=True)
AutoModel.register(ExMedBertConfig, ExMedBertModel, exist_ok=True)
AutoModelForPreTraining.register(ExMedBertConfig, ExMedBertForPreTraining, exist_ok=True)
AutoModelForMaskedLM.register(ExMedBertConfig, ExMedBertForPreTraining, exist_ok=True)
AutoModelForSequenceClassification.register(ExMedBertConfig, ExMedBertForSequenceClassification, exist_ok=True)

__all__ = [
    "ExMedBertConfig", "ExMedBertModel", "ExMedBertPreTrainedModel", "ExMedBertForPreTraining",
    "ExMedBertForSequenceClassification", "ExMedBertModelOutput", "ExMedBertPreTrainingOutput", "pool",
    "PRESETS", "resolve_architecture", "validate_architecture", "count_parameters",
]
