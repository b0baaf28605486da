"""examples/meds_end_to_end.sh runs end to end on its tiny MEDS root (about 20 s on 2 CPU cores)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_meds_example_writes_meds_predictions_for_every_model(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    work = tmp_path / "meds_run"
    p = subprocess.run(["bash", str(REPO / "examples" / "meds_end_to_end.sh"), str(work)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{p.stdout[-1500:]}\n{p.stderr[-3000:]}"
    assert "task: train" in p.stdout and "splits from MEDS subject_splits.parquet" in p.stdout
    files = sorted((work / "meds" / "task_labels" / "hf").rglob("*.parquet"))   # one file per data shard
    labels = pa.concat_tables(pq.read_table(f) for f in files).to_pydict()
    when = dict(zip(labels["subject_id"], labels["prediction_time"]))
    for run in ("finetuned", "rf", "xgboost"):
        assert f"{work / run / 'predictions.parquet'}" in p.stdout
        t = pq.read_table(work / run / "predictions.parquet").to_pydict()
        assert len(t["subject_id"]) > 0
        # each prediction is for the label's own subject and prediction time (midnight starting the prediction
        # date, as a timestamp)
        assert all(when[s] == t_ for s, t_ in zip(t["subject_id"], t["prediction_time"]))
    # the MEDS community's evaluator takes the files as they are and reproduces each run's own AUROC
    cli = Path(sys.executable).parent / "meds-evaluation-cli"
    for run in ("finetuned", "rf"):
        out = work / run / "meds_evaluation.json"
        e = subprocess.run([str(cli), f"predictions_path={work / run / 'predictions.parquet'}",
                            f"output_file={out}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert e.returncode == 0, e.stderr[-3000:]
        theirs = json.loads(out.read_text())["samples_equally_weighted"]["roc_auc_score"]
        ours = json.loads((work / run / "metrics.json").read_text())["metrics"]["auroc"]["value"]
        assert theirs == pytest.approx(ours, abs=5e-4), run
