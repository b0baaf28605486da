"""Predicted probabilities from a fine-tuned checkpoint for every patient of a task dataset.

Shows: `ExMedBertForSequenceClassification.from_pretrained(<finetuned>/checkpoint-best)`, batching a
task dataset (histories already cut at each patient's prediction date by the converter) and a softmax
over the logits. Writes a CSV patient_id,label,p_0,p_1 (label when the dataset has one).
Needs finetune_tiny.py first.

    python examples/predict_finetuned.py --workdir examples_out
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry, run


@dataclass
class Args:
    """Score a task dataset with a fine-tuned ExMed-BERT."""

    workdir: str = field(default="examples_out", metadata={"help": "folder of the earlier examples"})
    model_path: Optional[str] = field(default=None, metadata={
        "help": "fine-tuned checkpoint (default: <workdir>/finetuned/checkpoint-best)"})
    data: Optional[str] = field(default=None, metadata={
        "help": "task dataset .pt (default: <workdir>/pretrain_stuff/synthetic_task_test.pt)"})
    output: Optional[str] = field(default=None, metadata={"help": "CSV (default: <workdir>/predicted.csv)"})
    batch_size: int = field(default=32, metadata={"help": "patients per forward pass"})
    tiny: bool = field(default=False, metadata={"help": "accepted for symmetry with the other examples"})


@cli_entry
def main(argv=None) -> int:
    args = parse_args(Args, argv, prog="predict_finetuned.py")
    import torch

    from exmed_bert.data.collate import Collator, batched_view
    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.layout import time_to_iso
    from exmed_bert.io import atomic_write
    from exmed_bert.model.modeling import ExMedBertForSequenceClassification

    work = Path(args.workdir)
    model_path = Path(args.model_path or work / "finetuned" / "checkpoint-best")
    data = Path(args.data or work / "pretrain_stuff" / "synthetic_task_test.pt")
    output = Path(args.output or work / "predicted.csv")
    if not (model_path / "model.safetensors").is_file():
        raise UserError(f"{model_path}: no model.safetensors; pass --model-path with a fine-tuned checkpoint-best")

    model = ExMedBertForSequenceClassification.from_pretrained(model_path, use_safetensors=True).eval()
    ds = PatientDataset.load(data)
    # a model pretrained with --time-buckets also needs each code's time before the prediction date
    collate = Collator(mlm=False, time_buckets=model.config.time_buckets)
    loader = torch.utils.data.DataLoader(batched_view(ds, collate), batch_size=args.batch_size, collate_fn=collate)
    probs = []
    with torch.no_grad():
        for batch in loader:
            batch.pop("labels", None)
            probs.append(torch.softmax(model(**batch).logits.float(), dim=-1))  # (B, num_labels)
    p = torch.cat(probs).numpy()                                              # (N, num_labels)

    labels = ds.data["labels"].tolist() if ds.has_labels else [""] * len(ds)
    # MEDS labels: a patient has a row per prediction time, told apart by its time
    times = ([time_to_iso(t) for t in ds.data["prediction_times"].tolist()] if "prediction_times" in ds.data
             else None)
    with atomic_write(output) as f:
        f.write("patient_id," + ("prediction_time," if times else "") + "label,"
                + ",".join(f"p_{k}" for k in range(p.shape[1])) + "\n")
        for i, (pid, y, row) in enumerate(zip(ds.patient_ids, labels, p)):
            f.write(f"{pid}," + (f"{times[i]}," if times else "") + f"{y}," + ",".join(f"{v:.6f}" for v in row) + "\n")
    print(f"scored {len(ds)} patients of {data} with {model_path}: mean P(label=1) {p[:, 1].mean():.3f} -> {output}")
    return 0


if __name__ == "__main__":
    run(main)
