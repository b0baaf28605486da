"""Resizing 128 -> hidden (every method), the learned projection in the real model (gradients, save/load),
and the freeze callback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exmed_bert.clinvec.freeze import freeze_callback
from exmed_bert.clinvec.init import init_code_embeddings
from exmed_bert.clinvec.loader import load_clinvec
from exmed_bert.clinvec.resize import Resizer, resolve_method
from exmed_bert.errors import UserError
from exmed_bert.synthetic.clinvec_demo import write_node_table, write_vector_csv

RNG = np.random.default_rng(0)
# Correlated "release" vectors: 300 codes in 128 dims with decaying per-dimension scales.
LOADED = (RNG.normal(size=(300, 128)) * np.linspace(2.0, 0.1, 128)).astype(np.float32)


@pytest.mark.parametrize("method, hidden", [
    ("truncate", 64), ("pca", 64), ("pca", 192), ("pad_random", 192), ("pad_smart", 192),
    ("auto", 32), ("auto", 256),
])
def test_each_method_gives_the_hidden_width(method, hidden):
    used = resolve_method(method, hidden)
    out = Resizer(used, hidden, seed=1).fit(LOADED).transform(LOADED[:7])
    assert out.shape == (7, hidden) and out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("method", ["auto", "truncate", "pca", "pad_random", "pad_smart"])
def test_hidden_128_is_the_identity(method):
    used = resolve_method(method, 128)
    assert used == "identity"
    np.testing.assert_array_equal(Resizer(used, 128).fit(LOADED).transform(LOADED[:5]), LOADED[:5])


def test_auto_rule_and_code_embedding_size():
    assert [resolve_method("auto", h) for h in (64, 128, 256)] == ["pca", "identity", "pad_smart"]
    assert resolve_method("learned_projection", 64) == "learned_projection"  # at any width


def test_methods_keep_what_they_promise():
    truncated = Resizer("truncate", 64).fit(LOADED).transform(LOADED[:4])
    np.testing.assert_array_equal(truncated, LOADED[:4, :64])
    padded = Resizer("pad_smart", 192, seed=0).fit(LOADED).transform(LOADED)
    np.testing.assert_array_equal(padded[:, :128], LOADED)               # ClinVec values verbatim
    extra = padded[:, 128:]
    assert abs(extra.std() - LOADED.std(axis=0).mean()) < 0.1 * LOADED.std(axis=0).mean()  # matched stats
    # pad_smart's padding is a function of the vector (similar codes stay similar); pad_random's is not
    again = Resizer("pad_smart", 192, seed=0).fit(LOADED).transform(LOADED[:1] * 1.0)
    np.testing.assert_allclose(again, padded[:1], rtol=1e-6)
    pca = Resizer("pca", 16).fit(LOADED).transform(LOADED)
    assert pca.var(axis=0)[0] > pca.var(axis=0)[-1]                      # ordered by explained variance
    assert pca.var(axis=0).sum() > LOADED[:, :16].var(axis=0).sum()      # keeps more than truncate


@pytest.mark.parametrize("method, hidden", [("truncate", 256), ("pad_smart", 64), ("pad_random", 64), ("nope", 64)])
def test_impossible_resizes_are_user_errors(method, hidden):
    with pytest.raises(UserError, match="--resize-method"):
        resolve_method(method, hidden)


# --- the real model -------------------------------------------------------------------------------------

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENS = SPECIALS + ["icd10cm:E11", "icd10cm:E11.65", "atc:N02BE01", "cpt:99213"]


def write_release(folder):
    vecs = np.random.default_rng(3).normal(size=(3, 128)).astype(np.float32)
    write_node_table(folder / "ClinGraph_nodes.csv",
                     [("E11:icd10cm", "", "ICD10CM", 9), ("N02BE01:atc", "", "ATC", 4), ("99213:cpt", "", "CPT", 6)])
    write_vector_csv(folder / "ClinVec_icd10cm.csv", np.array([9]), vecs[:1])
    write_vector_csv(folder / "ClinVec_atc.csv", np.array([4]), vecs[1:2])
    write_vector_csv(folder / "ClinVec_cpt.csv", np.array([6]), vecs[2:])
    return vecs


def tiny_model(resize_method: str, hidden: int = 32):
    """As pretraining builds it: the method resolved once, stored in the config; learned_projection keeps a
    128-wide code table behind a trainable map."""
    from exmed_bert.model.modeling import ExMedBertConfig, ExMedBertForPreTraining

    torch.manual_seed(0)
    method = resolve_method(resize_method, hidden)
    config = ExMedBertConfig(vocab_size=len(TOKENS), hidden_size=hidden, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=16,
                             code_embedding_size=128 if method == "learned_projection" else None,
                             clinvec_resize_method=method)
    return ExMedBertForPreTraining(config)


def init(model, tmp_path, method):
    rows = init_code_embeddings(model, TOKENS, load_clinvec(tmp_path / "cv", "icd10cm,atc,cpt"), source=tmp_path / "cv",
                                use_hierarchical_init=True, seed=0, requested_method=method)
    rows.copy_into(model)
    return rows.report


def mlm_loss(model):
    ids = torch.tensor([[2, 5, 6, 4, 8, 3]])
    labels = torch.full_like(ids, -100)
    labels[0, 3] = 7
    return model(input_ids=ids, token_type_ids=torch.tensor([[0, 1, 1, 2, 3, 0]]),
                 position_ids=torch.tensor([[0, 1, 1, 1, 1, 1]]), age_ids=torch.full_like(ids, 60),
                 sex_ids=torch.ones_like(ids), attention_mask=torch.ones_like(ids), labels=labels).loss


def test_learned_projection_trains_and_survives_save_pretrained(tmp_path):
    from exmed_bert.model.modeling import ExMedBertForPreTraining

    (tmp_path / "cv").mkdir()
    vecs = write_release(tmp_path / "cv")
    model = tiny_model("learned_projection")
    report = init(model, tmp_path, "learned_projection")
    table = model.get_input_embeddings().weight
    assert table.shape == (len(TOKENS), 128) and report["resize_method_used"] == "learned_projection"
    assert torch.equal(table[5].detach(), torch.from_numpy(vecs[0]))     # exact 128-d ClinVec row
    assert report["tokens"]["icd10cm:E11.65"]["source"] == "parent"
    mlm_loss(model).backward()
    proj = model.bert.embeddings.code_projection
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert table.grad[5].abs().sum() > 0
    model.save_pretrained(tmp_path / "ckpt")
    loaded = ExMedBertForPreTraining.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.clinvec_resize_method == "learned_projection"  # the decision travels in config.json
    assert torch.equal(loaded.get_input_embeddings().weight, table.detach())
    assert torch.equal(loaded.bert.embeddings.code_projection.weight, proj.weight.detach())
    model.eval(), loaded.eval()
    assert torch.allclose(mlm_loss(model), mlm_loss(loaded))


def test_pca_init_in_the_real_model_keeps_other_rows(tmp_path):
    (tmp_path / "cv").mkdir()
    write_release(tmp_path / "cv")
    model = tiny_model("auto")
    before = model.get_input_embeddings().weight.detach().clone()
    report = init(model, tmp_path, "auto")
    after = model.get_input_embeddings().weight.detach()
    assert report["resize_method_used"] == "pca" and report["initialized_row_ids"] == [5, 6, 7, 8]
    assert torch.equal(after[:5], before[:5]) and not torch.equal(after[5], before[5])


def test_freeze_callback_keeps_rows_fixed_for_n_steps():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    model = tiny_model("auto")
    weight = model.get_input_embeddings().weight
    optim = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    cb = freeze_callback(model, [5, 6], steps=2)
    state, control, args = TrainerState(), TrainerControl(), TrainingArguments(output_dir="unused", report_to=[])
    cb.on_train_begin(args, state, control)
    frozen0, free0 = weight[[5, 6]].detach().clone(), weight[7].detach().clone()
    history = []
    for _ in range(3):
        cb.on_step_begin(args, state, control)
        optim.zero_grad()
        mlm_loss(model).backward()
        optim.step()
        state.global_step += 1
        cb.on_step_end(args, state, control)
        history.append((torch.equal(weight[[5, 6]].detach(), frozen0), torch.equal(weight[7].detach(), free0)))
    assert history[:2] == [(True, False), (True, False)]   # frozen during steps 1-2, others train
    assert history[2][0] is False                          # thawed at step 3
