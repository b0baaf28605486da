"""Real tokens/s of a finished `pretrain-exmed-bert.py` run, to set beside benchmarks/throughput.py's figure.

    python benchmarks/cli_throughput.py --run-dir RUN --train-data DATA/synthetic_train.pt \
        [--wall-s 123.4] [--benchmark throughput.json] [--label eager] [--out cli.json]

Two rates over the run's training steps: all of them (`train_runtime` from trainer_state.json, so data-loader
start and compilation included) and the steady part (TensorBoard's wall-clock stamps of the logged training
loss, from the second log to the last, so the first steps' compilation is left out). Tokens per step are the
train split's real tokens / steps (one epoch, no --max-steps). With --benchmark, the ratio to that file's
`large` bucketed bf16 row (the issue asks for >= 80%).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def logged_steps(run_dir: Path) -> list[tuple[int, float]]:
    """(step, wall-clock seconds) of every logged training loss in the run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted((run_dir / "runs").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "train/loss" in acc.Tags().get("scalars", []):
            points.update({e.step: e.wall_time for e in acc.Scalars("train/loss")})
    return sorted(points.items())


def summarise(run_dir: Path, train_data: Path, wall_s: float | None = None) -> dict:
    from exmed_bert.data.dataset import PatientDataset

    tokens = int(PatientDataset.load(train_data).lengths.sum())
    state = json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))
    steps = int(state["global_step"])
    runtime = next((h["train_runtime"] for h in state.get("log_history", []) if "train_runtime" in h), None)
    out = dict(run_dir=str(run_dir), train_tokens=tokens, steps=steps, tokens_per_step=tokens / max(steps, 1),
               train_runtime_s=runtime, process_wall_s=wall_s)
    if runtime:
        out["real_tokens_per_s_train_runtime"] = tokens / runtime
    points = logged_steps(run_dir)
    if len(points) >= 3:
        (s0, t0), (s1, t1) = points[1], points[-1]
        out.update(steady_from_step=s0, steady_to_step=s1,
                   real_tokens_per_s_steady=(s1 - s0) * out["tokens_per_step"] / max(t1 - t0, 1e-9))
    return out


def benchmark_rate(path: Path) -> float | None:
    """The `large` bucketed bf16 row of a benchmarks/throughput.py result, what the CLI's default path runs."""
    rows = json.loads(path.read_text(encoding="utf-8")).get("results", [])
    row = next((r for r in rows if (r.get("preset"), r.get("kind"), r.get("precision")) == ("large", "bucketed", "bf16")
                and "real_tokens_per_s" in r), None)
    return None if row is None else float(row["real_tokens_per_s"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="the pretraining --output-dir")
    p.add_argument("--train-data", required=True, help="the <dataset-name>_train.pt it trained on")
    p.add_argument("--wall-s", type=float, default=None, help="the process's wall-clock seconds, for the record")
    p.add_argument("--benchmark", default=None, help="a benchmarks/throughput.py JSON to compare with")
    p.add_argument("--label", default="")
    p.add_argument("--out", default=None, help="write the summary here as JSON too")
    a = p.parse_args(argv)
    res = dict(label=a.label, **summarise(Path(a.run_dir), Path(a.train_data), a.wall_s))
    if a.benchmark and Path(a.benchmark).is_file():
        bench = benchmark_rate(Path(a.benchmark))
        if bench:
            res["benchmark_large_bucketed_bf16_tokens_per_s"] = bench
            for key in ("real_tokens_per_s_steady", "real_tokens_per_s_train_runtime"):
                if key in res:
                    res[key.replace("real_tokens_per_s", "share_of_benchmark")] = res[key] / bench
    print("CLI " + json.dumps(res))
    if a.out:
        from exmed_bert.io import write_json

        write_json(a.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
