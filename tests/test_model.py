"""ExMed-BERT model: head shapes, padding/packing invariance, sparse MLM head, save/load, Auto*, init, presets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from exmed_bert.data.collate import Collator
from exmed_bert.errors import UserError
from exmed_bert.model.architecture import check_sizes, resolve_architecture
from exmed_bert.model.modeling import (ExMedBertConfig, ExMedBertForPreTraining, ExMedBertForSequenceClassification,
                                       ExMedBertModel, count_parameters)

V = 100


def tiny_config(**kw) -> ExMedBertConfig:
    base = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=64)
    base.update(kw)
    return ExMedBertConfig(**base)


def make_items(n: int = 6, seed: int = 0, min_len: int = 3, max_len: int = 20) -> list[dict]:
    """Dataset-like items: [CLS] then codes with visit positions and ages, like PatientDataset[i]."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        t = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        ids = torch.randint(5, V, (t,), generator=g, dtype=torch.int32)
        ids[0] = 2
        visits = torch.cat([torch.zeros(1), torch.sort(torch.randint(1, 8, (t - 1,), generator=g)).values])
        items.append(dict(input_ids=ids, token_type_ids=torch.randint(1, 4, (t,), generator=g, dtype=torch.int8),
                          position_ids=visits.to(torch.int16), age_ids=(40 + visits).to(torch.int16),
                          sex=int(i % 3), plos_los=int(i * 3 % 11), index=i))
    return items


def collate(items, **kw):
    return Collator(vocab_size=V, seed=1, plos_threshold=7, mlm_probability=0.3, **kw)(items)


@pytest.fixture(scope="module")
def model() -> ExMedBertForPreTraining:
    torch.manual_seed(0)
    return ExMedBertForPreTraining(tiny_config()).eval()


def test_head_shapes(model):
    batch = collate(make_items())
    b, t = batch["input_ids"].shape
    out = model(**batch)
    m = int((batch["labels"] != -100).sum())
    assert out.mlm_logits.shape == (m, V) and out.mlm_labels.shape == (m,)
    assert out.plos_logits.shape == (b,) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert torch.allclose(out.loss, out.mlm_loss + model.config.plos_weight * out.plos_loss)
    full = model(**{k: v for k, v in batch.items() if k not in ("labels", "plos_labels")})
    assert full.mlm_logits.shape == (b, t, V) and full.loss is None
    enc = model.bert(**{k: v for k, v in batch.items() if k not in ("labels", "plos_labels")})
    assert enc.last_hidden_state.shape == (b, t, 32) and enc.pooled_output.shape == (b, 32)
    for n in (1, 2, 3):
        clf = ExMedBertForSequenceClassification(tiny_config(num_labels=n)).eval()
        labels = torch.tensor([0, 1, 0, 1, 0, 1]) % max(n, 2)
        out = clf(**{k: v for k, v in batch.items() if k not in ("labels", "plos_labels")}, labels=labels)
        assert out.logits.shape == (b, n) and torch.isfinite(out.loss)


def test_sparse_mlm_head_equals_full_vocabulary_loss(model):
    batch = collate(make_items())
    out = model(**batch, return_hidden=True)
    full_logits = model.cls(out.last_hidden_state)  # (B, T, V) at every position
    full_loss = F.cross_entropy(full_logits.reshape(-1, V), batch["labels"].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.mlm_loss, full_loss, atol=1e-6)
    picked = batch["labels"] != -100
    assert torch.allclose(out.mlm_logits, full_logits[picked], atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_outputs(pooling):
    torch.manual_seed(0)
    m = ExMedBertForPreTraining(tiny_config(plos_pooling=pooling)).eval()
    batch = collate(make_items())
    wide = {}
    for k, v in batch.items():
        if v.dim() == 2:  # add 17 pad columns; labels pad with -100
            wide[k] = F.pad(v, (0, 17), value=-100 if k == "labels" else 0)
        else:
            wide[k] = v
    a, b = m(**batch, return_hidden=True), m(**wide, return_hidden=True)
    t = batch["input_ids"].shape[1]
    real = batch["attention_mask"].bool()
    assert torch.allclose(a.last_hidden_state[real], b.last_hidden_state[:, :t][real], atol=1e-5)
    assert torch.allclose(a.plos_logits, b.plos_logits, atol=1e-5)
    assert torch.allclose(a.loss, b.loss, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_packed_loss_equals_padded_loss(pooling):
    torch.manual_seed(0)
    m = ExMedBertForPreTraining(tiny_config(plos_pooling=pooling)).eval()
    items = make_items(8)
    padded, packed = collate(items), collate(items, pack_length=48)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]  # really packed several per row
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"] != -100).sum())
    a, b = m(**padded), m(**packed)
    assert torch.allclose(a.mlm_loss, b.mlm_loss, atol=1e-5)
    assert torch.allclose(a.plos_loss, b.plos_loss, atol=1e-5)
    assert torch.allclose(a.loss, b.loss, atol=1e-5)


def test_packed_patient_never_attends_to_another(model):
    items = make_items(8)
    batch = collate(items, pack_length=48, return_index=True)
    rows = batch["seq_ids"]
    # Two patients sharing a row: perturb every token of the first, the second must not move.
    row = next(r for r in range(rows.shape[0]) if len(set(rows[r].tolist()) - {-1}) >= 2)
    a_seq, b_seq = sorted(set(rows[row].tolist()) - {-1})[:2]
    changed = dict(batch)
    changed["input_ids"] = batch["input_ids"].clone()
    sel = rows == a_seq
    changed["input_ids"][sel] = (batch["input_ids"][sel] + 7) % (V - 5) + 5
    changed["age_ids"] = torch.where(sel, batch["age_ids"] + 3, batch["age_ids"])
    x = model(**{k: v for k, v in batch.items() if k != "index"}, return_hidden=True)
    y = model(**{k: v for k, v in changed.items() if k != "index"}, return_hidden=True)
    other = rows == b_seq
    assert not torch.allclose(x.last_hidden_state[sel], y.last_hidden_state[sel])
    assert torch.allclose(x.last_hidden_state[other], y.last_hidden_state[other], atol=1e-6)
    assert torch.allclose(x.plos_logits[b_seq], y.plos_logits[b_seq], atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"position_embedding_type": "sinusoidal"}, {"code_embedding_size": 16},
                                {"plos_pooling": "mean", "clinvec_resize_method": "pca"}])
def test_save_load_round_trip_gives_identical_logits(tmp_path, kw):
    from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

    torch.manual_seed(0)
    m = ExMedBertForPreTraining(tiny_config(**kw)).eval()
    batch = collate(make_items())
    m.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is ExMedBertForPreTraining
    assert all(getattr(loaded.config, k) == v for k, v in kw.items())  # config.json carries every setting
    assert torch.equal(m(**batch).mlm_logits, loaded(**batch).mlm_logits)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is ExMedBertModel
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "plos_labels")}
    assert torch.equal(encoder(**inputs).last_hidden_state, m.bert(**inputs).last_hidden_state)
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert type(clf) is ExMedBertForSequenceClassification
    assert torch.equal(clf.bert.get_input_embeddings().weight, m.get_input_embeddings().weight)


def test_code_embedding_size_adds_projection_and_unties_decoder():
    m = ExMedBertForPreTraining(tiny_config(code_embedding_size=16))
    assert m.get_input_embeddings().weight.shape == (V, 16)
    assert m.bert.embeddings.code_projection.weight.shape == (32, 16)
    assert m.get_output_embeddings().weight.shape == (V, 32)
    tied = ExMedBertForPreTraining(tiny_config())
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight


@pytest.mark.parametrize("scheme", ["orthogonal", "xavier", "kaiming"])
def test_each_initialisation_runs(scheme):
    torch.manual_seed(0)
    m = ExMedBertForPreTraining(tiny_config(initialization=scheme))
    emb = m.get_input_embeddings().weight
    assert torch.count_nonzero(emb[0]) == 0 and emb[1:].abs().sum() > 0  # padding row zero
    assert torch.count_nonzero(m.bert.encoder.layer[0].qkv.bias) == 0
    if scheme == "orthogonal":
        w = m.bert.encoder.layer[0].attn_out.weight
        assert torch.allclose(w @ w.T, torch.eye(32), atol=1e-4)
    assert torch.isfinite(m(**collate(make_items())).loss)


def test_bf16_autocast_forward_and_backward_are_finite():
    torch.manual_seed(0)
    m = ExMedBertForPreTraining(tiny_config())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(**collate(make_items()))
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_class_weights_change_classification_loss():
    torch.manual_seed(0)
    clf = ExMedBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    batch = {k: v for k, v in collate(make_items()).items() if k not in ("labels", "plos_labels")}
    labels = torch.tensor([0, 0, 0, 0, 0, 1])
    plain = clf(**batch, labels=labels).loss
    weighted = clf(**batch, labels=labels, class_weights=torch.tensor([1.0, 10.0])).loss
    assert not torch.allclose(plain, weighted)
    clf.config.class_weights = [1.0, 10.0]
    assert torch.allclose(clf(**batch, labels=labels).loss, weighted)


def test_presets_overrides_and_validation():
    assert resolve_architecture("large") == dict(num_hidden_layers=6, hidden_size=288, intermediate_size=576,
                                                 num_attention_heads=6)
    small = resolve_architecture("small", hidden_size=96, num_attention_heads=None)
    assert small["hidden_size"] == 96 and small["num_attention_heads"] == 2
    with pytest.raises(UserError, match="64 is not divisible by --num-attention-heads 3; use e.g. --num-attention-heads 2"):
        resolve_architecture("small", num_attention_heads=3)
    with pytest.raises(ValueError, match="not divisible"):
        check_sizes(hidden_size=64, num_attention_heads=3)
    with pytest.raises(UserError, match="unknown model size"):
        resolve_architecture("huge")
    with pytest.raises(ValueError, match="divisible"):  # the config checks its sizes with the same function
        tiny_config(num_attention_heads=3)


def test_count_parameters_excludes_embeddings():
    m = ExMedBertForPreTraining(tiny_config())
    total, core = count_parameters(m), count_parameters(m, exclude_embeddings=True)
    emb = sum(e.weight.numel() for e in m.modules() if isinstance(e, torch.nn.Embedding))
    assert total == core + emb + V  # + the decoder bias over the vocabulary


def test_cuda_attention_never_uses_cudnn_sdpa():
    """cuDNN SDPA builds a plan per new (batch, length) shape; bucketed batches made bf16 10-20x slower
    on an H200 (docs/PERFORMANCE.md). The encoder must keep it out of the backends it allows."""
    from torch.nn.attention import SDPBackend

    from exmed_bert.model.encoder import _sdpa_backends

    allowed = _sdpa_backends()
    assert SDPBackend.CUDNN_ATTENTION not in allowed
    assert SDPBackend.EFFICIENT_ATTENTION in allowed  # the kernel that takes our boolean masks
