"""The interactive wizard, driven through a pseudo-terminal as a user would (pexpect)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pexpect
import pytest
import yaml

from exmed_bert.synthetic.task import TASKS

ROOT = Path(__file__).resolve().parent.parent
TASK_PROMPT = f"Planted task ({', '.join(TASKS)}) [hf]: "   # the choices come from the one task list


def spawn(tmp_path: Path, *extra: str) -> pexpect.spawn:
    child = pexpect.spawn(sys.executable, ["-m", "exmed_bert.cli.wizard", "--config", "config.yaml", *extra],
                          cwd=str(tmp_path), encoding="utf-8", timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                               "HOME": str(tmp_path)})
    return child


def tiny_config(tmp_path: Path, clinvec_dir: str = "ClinVec") -> None:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["generate"].update(num_patients=60)
    cfg["convert"].update(max_length=64)
    cfg["pretrain"].update(model_size="tiny", num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                           num_attention_heads=1, num_epochs=1, batch_size=8, clinvec_dir=clinvec_dir)
    cfg["finetune"].update(num_epochs=1)
    cfg["rf"] = {"n_estimators": 10}
    cfg["xgboost"] = {"n_estimators": 10}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))


def answer(child: pexpect.spawn, prompt: str, reply: str) -> None:
    child.expect_exact(prompt)
    child.sendline(reply)


def test_prompts_defaults_validation_and_summary(tmp_path):
    tiny_config(tmp_path)
    child = spawn(tmp_path, "--dry-run")
    child.expect_exact("STEP 1: Data Generation")
    answer(child, "Generate new synthetic data? (y/n) [y]: ", "maybe")
    child.expect_exact("Invalid answer: 'maybe' is not y or n")
    answer(child, "Generate new synthetic data? (y/n) [y]: ", "")
    answer(child, "Number of patients to generate [60]: ", "lots")
    child.expect_exact("Invalid answer: 'lots' is not a whole number")
    answer(child, "Number of patients to generate [60]: ", "500")
    answer(child, "Novel code probability (0.0-1.0) [0.01]: ", "1.5")
    child.expect_exact("Invalid answer: 1.5 is outside 0.0-1.0")
    answer(child, "Novel code probability (0.0-1.0) [0.01]: ", "0.02")
    answer(child, TASK_PROMPT, "order")
    child.expect_exact("Invalid answer: 'order' is not one of hf, temporal")
    answer(child, TASK_PROMPT, "temporal")
    child.expect_exact("STEP 2: Dataset Conversion")
    answer(child, "Maximum sequence length [64]: ", "")
    answer(child, "Training set ratio (0.0-1.0) [0.8]: ", "0.7")
    child.expect_exact("STEP 3: ClinVec Embeddings")
    answer(child, "Use ClinVec pre-trained embeddings? (y/n) [y]: ", "n")
    child.expect_exact("STEP 4: Review Training Configuration")
    child.expect_exact("Configuration Summary:")
    child.expect_exact("    - Layers: 1")
    child.expect_exact("    - Hidden size: 32")
    child.expect_exact("    - Max sequence length: 64")
    child.expect_exact("    - Status: DISABLED")
    answer(child, "Proceed with training? (y/n) [y]: ", "y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    run_cfg = yaml.safe_load((tmp_path / "output" / "wizard_config.yaml").read_text())
    gen, conv, pre = run_cfg["generate"], run_cfg["convert"], run_cfg["pretrain"]
    assert (gen["num_patients"], gen["novel_prob"], gen["task"], conv["train_ratio"]) == (500, 0.02, "temporal", 0.7)
    assert pre["use_clinvec"] is False and pre["model_size"] == "tiny"  # the answers join each stage's section
    # config.yaml itself is untouched: answers apply to this run only
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["generate"]["num_patients"] == 60


def test_eof_aborts_cleanly(tmp_path):
    tiny_config(tmp_path)
    child = spawn(tmp_path, "--dry-run")
    child.expect_exact("Generate new synthetic data? (y/n) [y]: ")
    child.sendeof()
    child.expect_exact("Aborted: no more input (EOF); nothing was run.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "Traceback" not in (child.before or "")
    assert not (tmp_path / "output" / "wizard_config.yaml").exists()


def test_missing_clinvec_offers_demo(tmp_path):
    tiny_config(tmp_path, clinvec_dir="NoSuchClinVec")
    child = spawn(tmp_path, "--dry-run")
    answer(child, "Generate new synthetic data? (y/n) [y]: ", "")
    answer(child, "Number of patients to generate [60]: ", "")
    answer(child, "Novel code probability (0.0-1.0) [0.01]: ", "")
    answer(child, TASK_PROMPT, "")
    answer(child, "Maximum sequence length [64]: ", "")
    answer(child, "Training set ratio (0.0-1.0) [0.8]: ", "")
    answer(child, "Use ClinVec pre-trained embeddings? (y/n) [y]: ", "y")
    child.expect_exact("[MISSING] no ClinVec_<vocab>.csv files in NoSuchClinVec/")
    answer(child, "Use the bundled DEMO embeddings instead (not real ClinVec)? (y/n) [y]: ", "y")
    child.expect_exact("[FOUND] ICD-10 CM (ClinVec_icd10cm.csv)")
    answer(child, "  Include ICD-10 codes? (y/n) [y]: ", "")
    child.expect_exact("[FOUND] ATC Drug Codes (ClinVec_atc.csv)")
    answer(child, "  Include ATC drug codes? (y/n) [y]: ", "n")
    child.expect_exact("[FOUND] CPT Procedure Codes (ClinVec_cpt.csv)")
    answer(child, "  Include CPT codes? (y/n) [y]: ", "")
    child.expect_exact("Selected vocabularies: icd10cm,cpt")
    answer(child, "Use hierarchical initialization for novel codes? (y/n) [y]: ", "")
    answer(child, "Embedding resize method [auto]: ", "zoom")
    child.expect_exact("Invalid answer: 'zoom' is not one of auto")
    answer(child, "Embedding resize method [auto]: ", "pca")
    child.expect_exact("    - Status: ENABLED")
    child.expect_exact("    - Vocabularies: icd10cm,cpt")
    answer(child, "Proceed with training? (y/n) [y]: ", "n")
    child.expect_exact("Aborted: training cancelled; nothing was run.")
    child.expect(pexpect.EOF)


@pytest.mark.slow
def test_wizard_runs_tiny_pipeline_to_the_end(tmp_path):
    tiny_config(tmp_path)
    child = spawn(tmp_path)
    child.timeout = 900
    for prompt, reply in [("Generate new synthetic data? (y/n) [y]: ", ""),
                          ("Number of patients to generate [60]: ", ""),
                          ("Novel code probability (0.0-1.0) [0.01]: ", ""),
                          (TASK_PROMPT, ""),
                          ("Maximum sequence length [64]: ", ""),
                          ("Training set ratio (0.0-1.0) [0.8]: ", ""),
                          ("Use ClinVec pre-trained embeddings? (y/n) [y]: ", "n"),
                          ("Proceed with training? (y/n) [y]: ", "")]:
        answer(child, prompt, reply)
    child.logfile_read = log = io.StringIO()
    finished = child.expect_exact(["Pipeline finished in", pexpect.EOF])
    assert finished == 0, log.getvalue()[-3000:]
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, log.getvalue()[-3000:]
    assert (tmp_path / "output" / "report.md").is_file()
    assert (tmp_path / "output" / "random_init" / "checkpoint-best" / "model.safetensors").is_file()


def test_summary_shows_the_architecture_the_preset_resolves_to(capsys):
    """The wizard's summary reads the stages' resolved arguments: a preset alone gives its sizes; an
    explicit size overrides only itself."""
    from exmed_bert.cli.wizard import print_summary, settings

    print_summary(settings({"model_size": "medium"}, "config.yaml"))
    out = capsys.readouterr().out
    assert "- Layers: 4" in out and "- Hidden size: 128" in out and "- Attention heads: 4" in out
    print_summary(settings({"model_size": "small", "hidden_size": 96}, "config.yaml"))
    out = capsys.readouterr().out
    assert "- Layers: 2" in out and "- Hidden size: 96" in out and "- Intermediate size: 128" in out


def test_answers_go_to_their_stage_and_win_over_the_guides_flat_keys():
    """A flat config.yaml (the guide's layout) keeps its keys; each answer is written in its stage's section,
    where it wins for that stage alone."""
    from exmed_bert.cli.wizard import answer, settings

    flat = {"num_patients": 10, "seed": 3, "clinvec_params": {"use_clinvec": True, "clinvec_dir": "ClinVec"}}
    cfg = answer(answer(flat, "generate", num_patients=500), "pretrain", use_clinvec=False)
    now = settings(cfg, "config.yaml")
    assert now["generate"].num_patients == 500 and now["pretrain"].use_clinvec is False
    assert now["convert"].seed == now["generate"].seed == 3 and now["generate"].clinvec_dir == "ClinVec"
    assert flat == {"num_patients": 10, "seed": 3, "clinvec_params": {"use_clinvec": True, "clinvec_dir": "ClinVec"}}
