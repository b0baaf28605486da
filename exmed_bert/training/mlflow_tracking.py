"""MLflow tracking through an explicit `MlflowClient(tracking_uri)`: params, metrics and the model folder.

We never use mlflow's global fluent state or transformers' MLflowCallback: without a tracking URI nothing
is created (no ./mlruns), and with one everything goes to that server only. Rank 0 logs; others no-op.
mlflow itself is imported inside the methods: 1.0 s to import (python -X importtime), paid only by runs
given a tracking URI.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse
from typing import Any

from transformers import TrainerCallback

from exmed_bert.errors import UserError
from exmed_bert.io import write_json

RUN_ID_FILE = "mlflow_run.json"  # lets a resumed run keep logging into the same MLflow run


class MlflowLogger(TrainerCallback):
    def __init__(self, tracking_uri: str, experiment_name: str, params: dict[str, Any], output_dir: str | os.PathLike,
                 run_name: str | None = None, enabled: bool = True):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.params = params
        self.output_dir = Path(output_dir)
        self.run_name = run_name or self.output_dir.name
        self.enabled = enabled
        self.client = None
        self.run_id: str | None = None

    def start(self, resume: bool = False) -> str | None:
        """Create (or, when resuming, reopen) the run and log the params. Fails early if unreachable."""
        if not self.enabled:
            return None
        from mlflow.tracking import MlflowClient

        self._check_reachable()
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        try:
            previous = _read_run_id(self.output_dir) if resume else None
            if previous is not None:
                self.run_id = previous
                self.client.update_run(previous, status="RUNNING")
                return self.run_id
            exp = self.client.get_experiment_by_name(self.experiment_name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.experiment_name)
            run = self.client.create_run(exp_id, run_name=self.run_name)
        except Exception as e:  # noqa: BLE001 - any connection / server failure is a setup problem
            raise UserError(f"--mlflow-tracking-uri {self.tracking_uri}: cannot reach the MLflow server "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); start it with "
                            "`mlflow server --port 5000` or drop the flag") from None
        self.run_id = run.info.run_id
        write_json(self.output_dir / RUN_ID_FILE, {"run_id": self.run_id, "tracking_uri": self.tracking_uri})
        self.log_params(self.params)
        return self.run_id

    def _check_reachable(self, timeout: float = 5.0) -> None:
        """Fail in seconds, not after the client's minutes of retries, when nothing listens there."""
        url = urlparse(self.tracking_uri)
        if url.scheme not in ("http", "https"):
            return  # a local file or database URI: the client reports its own problems
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
        except OSError as e:
            raise UserError(f"--mlflow-tracking-uri {self.tracking_uri}: cannot reach the MLflow server ({e}); "
                            "start it with `mlflow server --port 5000` or drop the flag") from None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        if self.client is None:
            return
        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # the server caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        if self.client is None:
            return
        now = int(time.time() * 1000)
        items = [Metric(_metric_name(k), float(v), now, int(step)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_model_folder(self, folder: str | os.PathLike, artifact_path: str = "model") -> None:
        if self.client is not None and Path(folder).is_dir():
            self.client.log_artifacts(self.run_id, str(folder), artifact_path=artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id, status=status)
            self.client = None

    # Trainer hooks: every `Trainer.log` call (train loss, learning rate, eval metrics) becomes metrics
    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs and self.client is not None:
            try:
                self.log_metrics(logs, state.global_step)
            except Exception as e:  # noqa: BLE001 - a tracking outage must not kill a long training run
                print(f"warning: MLflow logging failed ({type(e).__name__}: {str(e)[:200]}); "
                      "training continues, metrics stay in output/runs and trainer_state.json")
                self.client = None


def _metric_name(key: str) -> str:
    # the Trainer's own names: "loss" and "learning_rate" while training, "eval_*" after each evaluation
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(key))[:250]


def _read_run_id(output_dir: Path) -> str | None:
    path = output_dir / RUN_ID_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError):
        return None
