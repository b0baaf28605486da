"""Summarise benchmarks/clinvec_novel.sh: MLM loss curves (PNG) and AUROC overall and on novel-code patients."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from exmed_bert.data.dataset import PatientDataset  # noqa: E402
from exmed_bert.data.vocab import Vocab  # noqa: E402
from exmed_bert.evaluation.metrics import binary_metrics, paired_auroc_delta  # noqa: E402
from exmed_bert.synthetic.embedding_vocab import demo_codes  # noqa: E402


def curve(run: Path) -> tuple[list[int], list[float]]:
    state = json.loads((run / "trainer_state.json").read_text())
    pts = [(h["step"], h["eval_loss"]) for h in state["log_history"] if "eval_loss" in h]
    return [s for s, _ in pts], [v for _, v in pts]


def predictions(run: Path) -> dict[str, tuple[int, float]]:
    with open(run / "predictions.csv", newline="") as f:
        return {r["patient_id"]: (int(r["label"]), float(r["probability"])) for r in csv.DictReader(f)}


def main(out: str) -> None:
    out = Path(out)
    fig, ax = plt.subplots(figsize=(6, 4))
    summary: dict = {"curves": {}}
    for init in ("clinvec", "random"):
        steps, loss = curve(out / f"pre_{init}")
        summary["curves"][init] = {"steps": steps, "eval_loss": loss}
        ax.plot(steps, loss, marker="o", ms=3, label={"clinvec": "demo ClinVec init", "random": "random init"}[init])
    ax.set_xlabel("update step")
    ax.set_ylabel("validation MLM loss")
    ax.set_title("Pretraining with many novel codes (--novel-prob 0.2)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "clinvec_vs_random_mlm_loss.png", dpi=120)

    vocab = Vocab.load(out / "data" / "vocab.json")
    embedded = demo_codes()
    novel_ids = {i for i, t in enumerate(vocab.tokens) if ":" in t and t not in embedded}
    test = PatientDataset.load(out / "data" / "synthetic_task_test.pt")
    ids, offs = test.data["input_ids"].numpy(), test.data["offsets"].numpy()
    has_novel = {pid for k, pid in enumerate(test.data["patient_ids"])
                 if novel_ids & set(ids[offs[k]:offs[k + 1]].tolist())}
    a, b = predictions(out / "ft_clinvec"), predictions(out / "ft_random")
    for name, keep in (("all test patients", lambda p: True), ("test patients with a novel code", has_novel.__contains__)):
        pids = sorted(p for p in a if keep(p))
        y = np.array([a[p][0] for p in pids])
        pa, pb = np.array([a[p][1] for p in pids]), np.array([b[p][1] for p in pids])
        ma = binary_metrics(y, pa, 0.5, n_bootstrap=1000)["metrics"]
        mb = binary_metrics(y, pb, 0.5, n_bootstrap=1000)["metrics"]
        d = paired_auroc_delta(y, pa, pb, n_bootstrap=1000)
        summary[name] = {"n": len(pids), "positives": int(y.sum()), "clinvec_auroc": ma["auroc"],
                         "random_auroc": mb["auroc"], "delta_clinvec_minus_random": d}
        print(f"{name}: n={len(pids)} (positives {int(y.sum())}); AUROC demo ClinVec {ma['auroc']['value']:.3f} "
              f"[{ma['auroc']['ci_low']:.3f}, {ma['auroc']['ci_high']:.3f}], random {mb['auroc']['value']:.3f} "
              f"[{mb['auroc']['ci_low']:.3f}, {mb['auroc']['ci_high']:.3f}]; paired delta {d['delta_auroc']:+.3f} "
              f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
    summary["novel_vocabulary_tokens"] = len(novel_ids)
    (out / "clinvec_novel.json").write_text(json.dumps(summary, indent=2))
    for init in ("clinvec", "random"):
        c = summary["curves"][init]
        print(f"{init}: val MLM loss " + ", ".join(f"{s}:{v:.3f}" for s, v in zip(c["steps"], c["eval_loss"])))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out/clinvec_novel")
