"""MLflow tracking against a real `mlflow server` (SQLite backend, loopback port) started by the test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from exmed_bert.cli.pretrain import main
from test_pretrain import make_dataset, run_args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    cmd = [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)  # the server and the workers it spawned (its own session)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


@pytest.mark.slow
def test_run_is_logged_to_the_tracking_server(mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # so a stray ./mlruns would show up here
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "model"
    rc = main(run_args(data, out, "--max-steps", "2", "--save-steps", "2", "--eval-steps", "1",
                       "--mlflow-tracking-uri", mlflow_server, "--mlflow-experiment-name", "exmed-test"))
    assert rc == 0
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("exmed-test")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["hidden_size"] == "32" and run.data.params["seed"] == "7"
    for key in ("loss", "learning_rate", "eval_loss", "eval_top10_accuracy", "eval_unigram_top10_accuracy"):
        assert key in run.data.metrics, key
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    model_files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"config.json", "model.safetensors", "vocab.json"} <= model_files
    assert not (tmp_path / "mlruns").exists()


def test_no_uri_sends_nothing_and_writes_no_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = make_dataset(tmp_path / "data", n=30)
    assert main(run_args(data, tmp_path / "model", "--max-steps", "1")) == 0
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "model" / "mlflow_run.json").exists()


def test_unreachable_server_is_a_user_error(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=30)
    rc = main(run_args(data, tmp_path / "model", "--max-steps", "1",
                       "--mlflow-tracking-uri", f"http://127.0.0.1:{free_port()}"))
    assert rc == 2 and "cannot reach the MLflow server" in capsys.readouterr().err
