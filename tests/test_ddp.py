"""DDP through torchrun on CPU (gloo): 2 processes, tiny model, a few steps; only rank 0 writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_pretrain import TINY, make_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes_leave_one_complete_best_model(tmp_path):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "scripts" / "pretrain-exmed-bert.py"), "--data-dir", str(data), "--output-dir", str(out),
           *TINY, "--batch-size", "2", "--max-steps", "4", "--save-steps", "2", "--eval-steps", "2",
           "--logging-steps", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert "Traceback" not in proc.stderr
    best = [p for p in out.iterdir() if "checkpoint-best" in p.name]
    assert [p.name for p in best] == ["checkpoint-best"]  # no temporary or duplicate folders
    assert {"config.json", "model.safetensors", "vocab.json"} <= {p.name for p in best[0].iterdir()}
    from exmed_bert.model.modeling import ExMedBertForPreTraining

    ExMedBertForPreTraining.from_pretrained(best[0])
    results = json.loads((out / "eval_results.json").read_text())
    assert math.isfinite(results["eval_loss"]) and results["step"] == 4
    assert json.loads((out / "run_config.json").read_text())["effective_batch_size"] == 4
    log = (out / "training.log").read_text()
    assert log.count("Model: ") == 1  # written by rank 0 only
    assert "x 2 process(es); effective batch size 4" in log
    # every validation patient counted exactly once across the two ranks
    single = subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain-exmed-bert.py"), "--data-dir", str(data),
                             "--output-dir", str(tmp_path / "single"), *TINY, "--max-steps", "1", "--device", "cpu"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    single_results = json.loads((tmp_path / "single" / "eval_results.json").read_text())
    assert results["eval_masked_tokens"] == single_results["eval_masked_tokens"]
