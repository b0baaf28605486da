"""Attention backends (SDPA vs FlexAttention) give the same model, and the CUDA fast-path switches resolve right.

Same weights, same patients: packed rows and padded rows give the same loss, FlexAttention and SDPA give the
same hidden states and loss, and no token of a packed row sees another patient. CI runs this on CPU
(FlexAttention's eager reference, forward only: torch has no FlexAttention backward on CPU). The GPU check
runs it on CUDA (compiled FlexAttention, backward included):

    EXMED_TEST_DEVICE=cuda python -m pytest tests/test_attention_backends.py -rs

Tolerances: fp32 1e-5 on CPU (the same math in another summation order), 1e-3 on CUDA (its kernels tile
differently, and Triton's may round fp32 products to TF32, a 10-bit mantissa); bf16 autocast 2e-2 on the loss
(~6.2 here, so ~0.3%) and 6e-2 on LayerNorm-scaled hidden states: bf16 keeps 8 bits of mantissa (relative step
2^-8 ~ 0.004) and two layers compound it. For scale: letting real tokens see the padding of their row moves
these hidden states by ~2 and the loss by ~0.09, so every tolerance here still catches a leak.
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from exmed_bert.data.collate import Collator
from exmed_bert.errors import UserError
from exmed_bert.model.modeling import ExMedBertConfig, ExMedBertForPreTraining
from exmed_bert.training.args import PretrainArgs, TrainingCommonArgs, check_attention
from exmed_bert.training.runtime import build_training_arguments, fast_path_kwargs
from test_model import V, make_items  # the same dataset-like items as the model tests

DEVICE = os.environ.get("EXMED_TEST_DEVICE", "cpu")
IMPLS = ["sdpa", "flex_attention"]
LOSS_TOL = {"fp32": 1e-5 if DEVICE == "cpu" else 1e-3, "bf16": 2e-2}
HIDDEN_TOL = {"fp32": 1e-5 if DEVICE == "cpu" else 1e-3, "bf16": 6e-2}
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason=(
    f"FlexAttention has no backward on CPU in torch {torch.__version__}; "
    "this runs on CUDA (EXMED_TEST_DEVICE=cuda, benchmarks/gpu_check.sh)"))


@pytest.fixture(scope="module", autouse=True)
def device_available():
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("EXMED_TEST_DEVICE=cuda but torch sees no CUDA GPU")


def batch_of(items, pack_length: int | None = None) -> dict:
    """Masks depend on (patient, position) only, so padded and packed batches of `items` mask the same codes;
    `index` (P,) names the patient behind each PLOS logit (packing reorders them)."""
    out = Collator(vocab_size=V, seed=1, plos_threshold=7, mlm_probability=0.3, pack_length=pack_length,
                           return_index=True)(items)
    return {k: v.to(DEVICE) for k, v in out.items()}


def by_patient(plos_logits: torch.Tensor, batch: dict) -> torch.Tensor:
    return plos_logits.float()[torch.argsort(batch["index"])]


def model_for(impl: str, dropout: float = 0.0) -> ExMedBertForPreTraining:
    torch.manual_seed(0)
    config = ExMedBertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                             attention_probs_dropout_prob=dropout, plos_pooling="mean", attn_implementation=impl)
    return ExMedBertForPreTraining(config).to(DEVICE).eval()


def autocast(dtype: str):
    return torch.autocast(DEVICE, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


@pytest.fixture(scope="module")
def batches() -> dict:
    items = make_items(8)
    padded, packed = batch_of(items), batch_of(items, pack_length=48)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # several patients share a row
    assert int((packed["seq_ids"] == -1).sum()) > 0  # and rows end in padding, which must stay harmless
    return {"padded": padded, "packed": packed}


@torch.no_grad()
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("impl", IMPLS)
def test_packed_loss_equals_padded_loss(batches, impl, dtype):
    m = model_for(impl)
    with autocast(dtype):
        a, b = m(**batches["padded"]), m(**batches["packed"])
    for name in ("mlm_loss", "plos_loss"):
        assert torch.allclose(getattr(a, name).float(), getattr(b, name).float(), atol=LOSS_TOL[dtype]), name
    pa, pb = by_patient(a.plos_logits, batches["padded"]), by_patient(b.plos_logits, batches["packed"])
    assert torch.allclose(pa, pb, atol=HIDDEN_TOL[dtype])


@torch.no_grad()
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_flex_attention_equals_sdpa(batches, layout, dtype):
    batch = batches[layout]
    real = batch["attention_mask"].bool()
    m = model_for("sdpa")
    with autocast(dtype):
        ref = m(**batch, return_hidden=True)
        m.config._attn_implementation = "flex_attention"  # same weights, other kernel
        out = m(**batch, return_hidden=True)
    assert torch.isfinite(out.last_hidden_state).all()  # padding rows too: none is fully masked
    assert torch.allclose(out.last_hidden_state[real].float(), ref.last_hidden_state[real].float(), atol=HIDDEN_TOL[dtype])
    assert torch.allclose(out.loss.float(), ref.loss.float(), atol=LOSS_TOL[dtype])


@torch.no_grad()
@pytest.mark.parametrize("impl", IMPLS)
def test_packed_patient_never_sees_another_patient_or_padding(batches, impl):
    batch = batches["packed"]
    rows = batch["seq_ids"]
    row = next(r for r in range(rows.shape[0]) if len(set(rows[r].tolist()) - {-1}) >= 2)
    first, second = sorted(set(rows[row].tolist()) - {-1})[:2]
    mine, theirs, pad = rows == first, rows == second, rows == -1
    changed = dict(batch)
    # another patient's codes, ages and types, and whatever ids sit on the padding
    changed["input_ids"] = torch.where(theirs, (batch["input_ids"] + 7) % (V - 5) + 5, batch["input_ids"])
    changed["input_ids"] = torch.where(pad, torch.randint_like(batch["input_ids"], 5, V), changed["input_ids"])
    changed["age_ids"] = torch.where(theirs, batch["age_ids"] + 3, batch["age_ids"])
    changed["token_type_ids"] = torch.where(theirs, 4 - batch["token_type_ids"].clamp(1, 3), batch["token_type_ids"])
    m = model_for(impl)
    x, y = m(**batch, return_hidden=True), m(**changed, return_hidden=True)
    assert not torch.allclose(x.last_hidden_state[theirs], y.last_hidden_state[theirs], atol=1e-3)  # it did change
    # masked scores are exactly 0 after softmax, so what others hold cannot move these at all (1e-5: slack only)
    assert torch.allclose(x.last_hidden_state[mine], y.last_hidden_state[mine], atol=1e-5)
    real = ~pad
    assert torch.allclose(x.last_hidden_state[real & ~theirs], y.last_hidden_state[real & ~theirs], atol=1e-5)
    assert torch.allclose(x.plos_logits[first], y.plos_logits[first], atol=1e-5)


def test_attn_implementation_is_a_load_time_choice(tmp_path):
    model_for("flex_attention").save_pretrained(tmp_path)
    assert "attn_implementation" not in (tmp_path / "config.json").read_text()  # as transformers: not saved
    loaded = ExMedBertForPreTraining.from_pretrained(tmp_path, attn_implementation="flex_attention")
    assert loaded.config._attn_implementation == "flex_attention"
    assert ExMedBertForPreTraining.from_pretrained(tmp_path).config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="attn_implementation must be one of sdpa, flex_attention"):
        ExMedBertConfig(attn_implementation="flex")


def test_flex_refuses_attention_dropout_in_training(batches):
    m = model_for("flex_attention", dropout=0.1).train()
    with pytest.raises(ValueError, match="attention_probs_dropout_prob=0"):
        m(**batches["packed"])
    with torch.no_grad():
        assert torch.isfinite(m.eval()(**batches["packed"]).loss)  # evaluation has no dropout: fine


@pytest.mark.skipif(DEVICE != "cpu", reason="the CPU guard; CUDA has the backward")
def test_flex_training_on_cpu_is_a_clear_error(batches):
    m = model_for("flex_attention").train()
    with pytest.raises(RuntimeError, match="cannot train on cpu.*attn_implementation='sdpa'"):
        m(**batches["packed"])


@needs_cuda
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_flex_gradients_equal_sdpa_gradients(batches, layout):
    """One bf16 training step's loss and gradients, FlexAttention vs SDPA (dropout 0, same weights)."""
    grads = {}
    for impl in IMPLS:
        m = model_for(impl).train()
        with autocast("bf16"):
            loss = m(**batches[layout]).loss
        loss.backward()
        grads[impl] = (loss.detach().float(), {n: p.grad.float() for n, p in m.named_parameters() if p.grad is not None})
    (la, ga), (lb, gb) = grads["sdpa"], grads["flex_attention"]
    assert torch.allclose(la, lb, atol=LOSS_TOL["bf16"])
    assert ga.keys() == gb.keys()
    for name in ga:
        scale = float(ga[name].abs().max()) + 1e-6  # compare relative to the gradient's own size
        assert float((ga[name] - gb[name]).abs().max()) <= 0.1 * scale, name


# ---- CUDA fast-path switches: (device, flags) -> TrainingArguments kwargs -------------------------------------


def test_fast_path_on_cpu_changes_nothing():
    assert fast_path_kwargs("cpu") == {"bf16": False}
    assert fast_path_kwargs("cpu", bf16=True) == {"bf16": True}
    assert fast_path_kwargs("cpu", tf32=False) == {"bf16": False}
    with pytest.raises(UserError, match="--tf32 applies to CUDA GPUs only"):
        fast_path_kwargs("cpu", tf32=True)


def test_fast_path_on_cuda_defaults_and_overrides():
    assert fast_path_kwargs("cuda", tf32_capable=True) == {"bf16": True, "tf32": True, "optim": "adamw_torch_fused"}
    assert fast_path_kwargs("cuda", tf32_capable=False)["tf32"] is False  # pre-Ampere GPU: no TF32
    assert fast_path_kwargs("cuda", bf16=False, tf32_capable=True) == \
        {"bf16": False, "tf32": True, "optim": "adamw_torch_fused"}  # fp32 run: TF32 matters most here
    assert fast_path_kwargs("cuda", tf32=False, tf32_capable=True)["tf32"] is False
    with pytest.raises(UserError, match="Ampere or newer"):
        fast_path_kwargs("cuda", tf32=True, tf32_capable=False)


def test_training_arguments_on_cpu_keep_transformers_defaults(tmp_path):
    from transformers import TrainingArguments

    targs = build_training_arguments(TrainingCommonArgs(output_dir=str(tmp_path), learning_rate=1e-4), device="cpu")
    stock = TrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    assert targs.bf16 is False and targs.tf32 is None and targs.optim == stock.optim


def test_flex_flag_is_checked_before_training():
    check_attention("sdpa", "cpu", 0.1)  # the default never complains
    check_attention("flex_attention", "cuda", 0.0)
    with pytest.raises(UserError, match="trains on CUDA only"):
        check_attention("flex_attention", "cpu", 0.0)
    with pytest.raises(UserError, match="--attention-probs-dropout-prob 0"):
        check_attention("flex_attention", "cuda", 0.1)


def test_pretrain_cli_refuses_flex_on_cpu():
    from exmed_bert.config import parse_args

    with pytest.raises(UserError, match="--attn-implementation flex_attention trains on CUDA only"):
        parse_args(PretrainArgs, ["--device", "cpu", "--attn-implementation", "flex_attention",
                                  "--attention-probs-dropout-prob", "0"])
    assert parse_args(PretrainArgs, ["--device", "cpu"]).attn_implementation == "sdpa"
