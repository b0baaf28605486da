"""A dataset read back for people: counts, length statistics and one patient decoded to visits, dates and codes
(lossless apart from truncation). What `example_load_synthetic_data.py` prints."""

from __future__ import annotations

import os

import numpy as np

from exmed_bert.data.dataset import UNKNOWN_BIRTH, PatientDataset, day_to_iso
from exmed_bert.data.vocab import SEP_ID, Vocab


def summary_lines(ds: PatientDataset, vocab: Vocab, path: str | os.PathLike) -> list[str]:
    """Patients, tokens, the vocabulary, tokens per patient and (task datasets) the label counts."""
    n = ds.lengths
    lines = [f"{path}: {len(ds)} patients, {int(n.sum())} tokens, vocabulary {len(vocab)} tokens",
             "tokens per patient: min {} / median {:.0f} / mean {:.1f} / p95 {:.0f} / max {}".format(
                 int(n.min()), float(np.median(n)), float(n.mean()), float(np.percentile(n, 95)), int(n.max()))]
    if ds.has_labels:
        labels, counts = np.unique(ds.data["labels"].numpy(), return_counts=True)
        lines.append("labels: " + ", ".join(f"{int(a)}: {int(b)}" for a, b in zip(labels, counts)))
    return lines


def describe_patient(ds, vocab, i: int) -> list[str]:
    """Lines showing patient i as visits: date, age, then its codes."""
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
