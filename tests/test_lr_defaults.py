"""Defaults that learn: without --learning-rate, each stage uses the value tuned for the model size."""

from __future__ import annotations

import pytest

from pathlib import Path

from exmed_bert.config import load_yaml, parse_args
from exmed_bert.model.architecture import PRESETS, preset_for_hidden_size
from exmed_bert.training.args import TUNED_LEARNING_RATES, FinetuneArgs, PretrainArgs, resolve_learning_rate

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("size", sorted(PRESETS))
def test_pretraining_uses_the_tuned_rate_of_its_preset(size):
    args = parse_args(PretrainArgs, ["--model-size", size])
    assert args.learning_rate == TUNED_LEARNING_RATES[size][0]


def test_an_explicit_rate_wins_and_the_guides_value_is_accepted():
    assert parse_args(PretrainArgs, ["--learning-rate", "1e-4"]).learning_rate == pytest.approx(1e-4)
    assert parse_args(FinetuneArgs, ["--learning-rate", "1e-5"]).learning_rate == pytest.approx(1e-5)
    assert parse_args(FinetuneArgs, []).learning_rate is None           # resolved from the model at run time


def test_tuned_values_for_small_are_the_pipeline_config():
    cfg = load_yaml(ROOT / "config.yaml")
    assert TUNED_LEARNING_RATES["small"] == (cfg["pretrain"]["learning_rate"], cfg["finetune"]["learning_rate"])


@pytest.mark.parametrize("size", sorted(PRESETS))
def test_one_function_decides_each_stages_default(size):
    pretraining, finetuning = PretrainArgs(model_size=size), FinetuneArgs()  # not validated: rates still unset
    resolve_learning_rate(pretraining, size)
    resolve_learning_rate(finetuning, size)
    assert (pretraining.learning_rate, finetuning.learning_rate) == TUNED_LEARNING_RATES[size]
    explicit = FinetuneArgs(learning_rate=3e-3)
    resolve_learning_rate(explicit, size)
    assert explicit.learning_rate == 3e-3


def test_the_tuned_table_is_read_in_one_place():
    """Only resolve_learning_rate looks the default up; every other module calls it."""
    sources = {p: p.read_text(encoding="utf-8") for p in (ROOT / "exmed_bert").rglob("*.py")}
    readers = [str(p.relative_to(ROOT)) for p, text in sources.items() if "TUNED_LEARNING_RATES[" in text]
    assert readers == ["exmed_bert/training/args.py"]
    assert sources[ROOT / "exmed_bert/training/args.py"].count("TUNED_LEARNING_RATES[") == 1


@pytest.mark.parametrize("hidden, preset", [(32, "tiny"), (64, "small"), (80, "small"), (128, "medium"), (288, "large"),
                                            (768, "large")])
def test_a_fine_tuned_model_is_matched_to_its_nearest_preset(hidden, preset):
    assert preset_for_hidden_size(hidden) == preset
