"""Crash safety of pretraining: resuming from a checkpoint (explicit or `auto`) reaches the same final
step with the same batches and masks (same losses), and the same seed gives the same losses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exmed_bert.cli.pretrain import main
from test_pretrain import make_dataset, run_args


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("resume_data"))


def history(out: Path) -> dict[int, float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def epochs(out: Path) -> dict[int, float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return {h["step"]: h["epoch"] for h in state["log_history"] if "loss" in h}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["auto", "path"])
def test_resume_reaches_the_same_step_with_the_same_losses(data_dir, tmp_path, how):
    # batch 8 over ~32 patients: a few batches per epoch, so 12 steps cross epoch boundaries, and
    # dynamic masking makes the masks depend on the epoch too
    flags = ["--batch-size", "8", "--max-steps", "12", "--save-steps", "2", "--eval-steps", "4", "--dynamic-masking"]
    full = tmp_path / "full"
    assert main(run_args(data_dir, full, *flags)) == 0
    ref = history(full)
    assert sorted(ref) == list(range(1, 13))
    # a checkpoint inside the second (or a later) epoch, not on an epoch boundary
    ep = epochs(full)
    resume_step = next(s for s in range(2, 12, 2) if ep[s] > 1 and ep[s] != int(ep[s]))

    crashed = tmp_path / "crashed"
    shutil.copytree(full, crashed)
    for ck in crashed.glob("checkpoint-*"):
        if ck.name != "checkpoint-best" and int(ck.name.split("-")[1]) > resume_step:
            shutil.rmtree(ck)
    for name in ("trainer_state.json", "eval_results.json"):
        (crashed / name).unlink()
    target = "auto" if how == "auto" else str(crashed / f"checkpoint-{resume_step}")
    assert main(run_args(data_dir, crashed, *flags, "--resume-from-checkpoint", target)) == 0

    got = history(crashed)
    assert json.loads((crashed / "trainer_state.json").read_text())["global_step"] == 12
    for step in range(resume_step + 1, 13):
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), f"step {step}"
    final_full = json.loads((full / "eval_results.json").read_text())
    final_resumed = json.loads((crashed / "eval_results.json").read_text())
    assert final_resumed["eval_loss"] == pytest.approx(final_full["eval_loss"], rel=1e-5)
    assert (crashed / "checkpoint-12" / "model.safetensors").is_file()


@pytest.mark.slow
def test_same_seed_same_losses_other_seed_differs(data_dir, tmp_path):
    flags = ["--max-steps", "3", "--save-steps", "10", "--eval-steps", "10"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(run_args(data_dir, a, *flags)) == 0
    assert main(run_args(data_dir, b, *flags)) == 0
    assert main(run_args(data_dir, c, *flags, "--seed", "8")) == 0
    assert history(a) == history(b)  # identical floats, not just close
    assert history(a)[1] != history(c)[1]


def test_resume_auto_without_checkpoints_starts_fresh(data_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(run_args(data_dir, out, "--max-steps", "1", "--resume-from-checkpoint", "auto")) == 0
    assert "starting from scratch" in capsys.readouterr().out
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1


def test_resume_from_checkpoint_without_weights_is_a_user_error(data_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(run_args(data_dir, out, "--max-steps", "1", "--save-steps", "1")) == 0
    (out / "checkpoint-1" / "model.safetensors").unlink()
    rc = main(run_args(data_dir, out, "--max-steps", "2", "--resume-from-checkpoint", "auto"))
    assert rc == 2 and "no model.safetensors" in capsys.readouterr().err


def code_rows(checkpoint: Path, rows: list[int]):
    from exmed_bert.model.modeling import ExMedBertForPreTraining

    return ExMedBertForPreTraining.from_pretrained(checkpoint).get_input_embeddings().weight.detach()[rows]


@pytest.mark.parametrize("rows_from", ["coverage report", "re-matching"])
def test_resumed_clinvec_run_keeps_rows_frozen_until_step_n(data_dir, tmp_path, capsys, rows_from):
    import torch

    out = tmp_path / "cv"
    flags = ["--max-steps", "6", "--save-steps", "2", "--eval-steps", "6", "--use-clinvec", "--clinvec-dir",
             str(tmp_path / "no_release"), "--vocab-types", "icd10cm,atc,cpt", "--freeze-clinvec-steps", "4",
             "--learning-rate", "1e-2"]
    assert main(run_args(data_dir, out, *flags, "--max-steps", "2")) == 0  # "crashes" after checkpoint-2
    rows = json.loads((out / "clinvec_coverage.json").read_text())["initialized_row_ids"]
    assert rows
    if rows_from == "re-matching":
        (out / "clinvec_coverage.json").unlink()
    capsys.readouterr()
    assert main(run_args(data_dir, out, *flags, "--resume-from-checkpoint", "auto")) == 0
    assert f"keeping {len(rows)} initialised code rows frozen until step 4" in capsys.readouterr().out
    start = code_rows(out / "checkpoint-2", rows)
    assert torch.equal(code_rows(out / "checkpoint-4", rows), start)  # still frozen after the resume
    assert not torch.equal(code_rows(out / "checkpoint-6", rows), start)  # thawed after step 4
