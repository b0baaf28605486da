"""Defaults that learn: without --learning-rate, each stage uses the value tuned for the model size."""

from __future__ import annotations

import pytest

from exmed_bert.config import parse_args
from exmed_bert.model.architecture import PRESETS, TUNED_LEARNING_RATES, preset_for_hidden_size
from exmed_bert.training.args import FinetuneArgs, PretrainArgs


@pytest.mark.parametrize("size", sorted(PRESETS))
def test_pretraining_uses_the_tuned_rate_of_its_preset(size):
    args = parse_args(PretrainArgs, ["--model-size", size])
    assert args.learning_rate == TUNED_LEARNING_RATES[size][0]


def test_an_explicit_rate_wins_and_the_guides_value_is_accepted():
    assert parse_args(PretrainArgs, ["--learning-rate", "1e-4"]).learning_rate == pytest.approx(1e-4)
    assert parse_args(FinetuneArgs, ["--learning-rate", "1e-5"]).learning_rate == pytest.approx(1e-5)
    assert parse_args(FinetuneArgs, []).learning_rate is None           # resolved from the model at run time


def test_tuned_values_for_small_are_the_pipeline_config():
    import yaml

    cfg = yaml.safe_load(open("config.yaml", encoding="utf-8"))
    assert TUNED_LEARNING_RATES["small"] == (cfg["learning_rate"], cfg["finetune"]["learning_rate"])


@pytest.mark.parametrize("hidden, preset", [(32, "tiny"), (64, "small"), (80, "small"), (128, "medium"), (288, "large"),
                                            (768, "large")])
def test_a_fine_tuned_model_is_matched_to_its_nearest_preset(hidden, preset):
    assert preset_for_hidden_size(hidden) == preset
