"""`example_load_synthetic_data.py`: load a converted split, print counts and length statistics, and
decode one patient back to codes, dates and visits (lossless apart from truncation)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from exmed_bert.config import parse_args
from exmed_bert.errors import UserError, cli_entry


@dataclass
class Args:
    """Inspect an encoded dataset: counts, length statistics and one decoded patient."""

    yaml_section: ClassVar[Optional[str]] = "example_load"

    data: str = field(default="pretrain_stuff/synthetic_train.pt", metadata={
        "help": "dataset file (.pt) written by convert_synthetic_to_dataset.py"})
    vocab: Optional[str] = field(default=None, metadata={"help": "vocab.json (default: next to the dataset)"})
    patient: int = field(default=0, metadata={"help": "row of the patient to decode"})


def describe_patient(ds, vocab, i: int) -> list[str]:
    """Lines showing patient i as visits: date, age, then its codes."""
    from exmed_bert.convert.validate import UNKNOWN_BIRTH, day_to_iso
    from exmed_bert.data.vocab import SEP_ID

    item = ds[i]
    d = ds.data
    s = int(ds.offsets[i])
    ids, pos, ages = item["input_ids"].tolist(), item["position_ids"].tolist(), item["age_ids"].tolist()
    days = d["days"][s:s + len(ids)].tolist()
    birth = int(d["birth_days"][i])
    sex = {0: "unknown", 1: "F", 2: "M"}[item["sex"]]
    lines = [f"patient {ds.patient_ids[i]} (row {i}): sex {sex}, born "
             f"{'unknown' if birth == UNKNOWN_BIRTH else day_to_iso(birth)}, {len(ids)} tokens, "
             f"{max(pos)} visits, longest stay {item['plos_los']} days"
             + (f", label {item['label']}" if "label" in item else "")]
    codes: list[str] = []
    for tok, p, age, day in zip(ids[1:], pos[1:], ages[1:], days[1:]):
        if tok == SEP_ID:
            lines.append(f"  visit {p:3d}  {day_to_iso(day)}  age {age:3d}  {' '.join(codes)}")
            codes = []
        else:
            codes.append(vocab.token(tok))
    return lines


@cli_entry
def main(argv=None) -> int:
    args = parse_args(Args, argv, prog="example_load_synthetic_data.py")
    import numpy as np

    from exmed_bert.data.dataset import PatientDataset
    from exmed_bert.data.vocab import Vocab

    ds = PatientDataset.load(args.data)
    vocab_path = args.vocab or Path(args.data).parent / "vocab.json"
    vocab = Vocab.load(vocab_path)
    ds.check_vocab(vocab, vocab_path)
    if len(ds) == 0:
        raise UserError(f"{args.data}: the dataset has no patients")
    if not 0 <= args.patient < len(ds):
        raise UserError(f"--patient must be between 0 and {len(ds) - 1}, got {args.patient}")
    n = ds.lengths
    print(f"{args.data}: {len(ds)} patients, {int(n.sum())} tokens, vocabulary {len(vocab)} tokens")
    print("tokens per patient: min {} / median {:.0f} / mean {:.1f} / p95 {:.0f} / max {}".format(
        int(n.min()), float(np.median(n)), float(n.mean()), float(np.percentile(n, 95)), int(n.max())))
    if ds.has_labels:
        labels, counts = np.unique(ds.data["labels"].numpy(), return_counts=True)
        print("labels: " + ", ".join(f"{int(a)}: {int(b)}" for a, b in zip(labels, counts)))
    print("\n".join(describe_patient(ds, vocab, args.patient)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
