"""The MEDS round trip's check: two conversions of one generated cohort, from its JSONL + task CSV and from
its MEDS root + labels, give the same datasets. Used by benchmarks/meds_roundtrip.sh.

    python benchmarks/meds_roundtrip_check.py FROM_JSON/cohort.pt FROM_MEDS/cohort.pt [CHECK.json]

Compared: vocab.json byte for byte; every dataset (<stem>_{train,val,test}.pt and the task datasets
<stem>_task_{train,val,test}.pt): the same patients (a JSON id P0042 is MEDS subject 42) in the same splits,
and for each patient the same tokens, token types, positions, ages, days, sex, birth day, stays, label and
prediction day. Fields not compared as they are: `patient_ids` (mapped, as above) and `prediction_times`,
which only MEDS labels carry. `prediction_days` must be equal: from the task CSV it is the prediction date,
and the root's labels are at midnight starting that date with no event stamped at midnight, so the history
ends the day before and the converter reads it on the date too. Stays are compared one by one (nested,
same-day and repeated stays included: the root writes each as one Visit/IP row with its discharge in `end`).
Prints a one-line verdict (the JSON summary goes to CHECK.json, else to stdout); exit status 1 on any
difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from exmed_bert.synthetic.meds_root import subject_id

SPLITS = ("train", "val", "test", "task_train", "task_val", "task_test")
TOKEN_FIELDS = ("input_ids", "token_type_ids", "position_ids", "age_ids", "days")   # [T], cut by offsets
STAY_FIELDS = ("los_days", "los_start_days")                                        # [S], cut by los_offsets
OFFSETS = {"offsets": TOKEN_FIELDS, "los_offsets": STAY_FIELDS}
ONLY_FROM_MEDS = ("prediction_times",)   # a MEDS label's time; a task CSV has a date only


def _per_patient(d: dict) -> tuple[dict, list[str]]:
    """{field: [value per patient]} of a dataset dict (token and stay fields cut by their offsets), and the
    fields it could not cut (tensors of no known level)."""
    n = len(d["patient_ids"])
    out, unknown = {}, []
    for off, fields in OFFSETS.items():
        o = d[off].tolist()
        for f in fields:
            if f in d:
                out[f] = [d[f][o[i]:o[i + 1]] for i in range(n)]
    for k, v in d.items():
        if k in out or k in OFFSETS or k == "patient_ids" or k in ONLY_FROM_MEDS or not torch.is_tensor(v):
            continue
        if v.dim() >= 1 and len(v) == n:
            out[k] = list(v)
        else:
            unknown.append(k)
    return out, unknown


def compare_dataset(a: dict, b: dict) -> list[str]:
    """Differences between dataset `a` (from JSON) and `b` (from MEDS); [] when they are the same."""
    problems = []
    keys_a = set(a) - set(ONLY_FROM_MEDS)
    keys_b = set(b) - set(ONLY_FROM_MEDS)
    if keys_a != keys_b:
        problems.append(f"fields differ: only from JSON {sorted(keys_a - keys_b)}, only from MEDS {sorted(keys_b - keys_a)}")
    for k in keys_a & keys_b:
        if not torch.is_tensor(a[k]) and k != "patient_ids" and a[k] != b[k]:
            problems.append(f"{k}: {a[k]!r} from JSON, {b[k]!r} from MEDS")
    ids_a = [str(subject_id(p)) for p in a["patient_ids"]]
    if sorted(ids_a) != sorted(b["patient_ids"]):
        only_a, only_b = set(ids_a) - set(b["patient_ids"]), set(b["patient_ids"]) - set(ids_a)
        return problems + [f"patients differ: {len(only_a)} only from JSON (e.g. {sorted(only_a)[:3]}), "
                           f"{len(only_b)} only from MEDS (e.g. {sorted(only_b)[:3]})"]
    if len(set(ids_a)) != len(ids_a):
        return problems + ["a patient appears twice"]
    if ids_a == list(b["patient_ids"]):   # the same order (the usual case): whole tensors compare at once
        for k in sorted(keys_a & keys_b):
            if not torch.is_tensor(a[k]):
                continue
            if not torch.equal(a[k], b[k]):
                problems.append(f"{k}: differs")
        return problems
    pa_, unknown_a = _per_patient(a)
    pb_, unknown_b = _per_patient(b)
    if unknown_a or unknown_b:
        problems.append(f"fields of no known level, not compared: {sorted(set(unknown_a) | set(unknown_b))}")
    where = {p: i for i, p in enumerate(b["patient_ids"])}
    for f in sorted(set(pa_) & set(pb_)):
        bad = [p for i, p in enumerate(ids_a) if not torch.equal(pa_[f][i], pb_[f][where[p]])]
        if bad:
            problems.append(f"{f}: differs for {len(bad)} patients (e.g. subject {bad[0]})")
    return problems


def compare(json_pt: str | Path, meds_pt: str | Path) -> dict:
    """The round trip's verdict: per dataset its patients, tokens and differences, and the vocabulary's."""
    json_pt, meds_pt = Path(json_pt), Path(meds_pt)
    summary = {"identical": True, "not_compared": ["patient_ids (P0042 = subject 42)", *ONLY_FROM_MEDS],
               "datasets": {}}
    va, vb = json_pt.with_name("vocab.json"), meds_pt.with_name("vocab.json")
    summary["vocab_identical"] = va.read_bytes() == vb.read_bytes()
    summary["identical"] &= summary["vocab_identical"]
    for split in SPLITS:
        fa, fb = (p.with_name(f"{p.stem}_{split}.pt") for p in (json_pt, meds_pt))
        if not fa.exists() and not fb.exists():
            continue
        if not (fa.exists() and fb.exists()):
            summary["datasets"][split] = {"problems": [f"only {fa if fa.exists() else fb} exists"]}
            summary["identical"] = False
            continue
        a, b = (torch.load(f, weights_only=True) for f in (fa, fb))
        problems = compare_dataset(a, b)
        summary["datasets"][split] = {"patients": len(a["patient_ids"]), "tokens": int(a["offsets"][-1]),
                                      "stays": int(a["los_offsets"][-1]), "problems": problems}
        summary["identical"] &= not problems
    return summary


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    summary = compare(argv[0], argv[1])
    text = json.dumps(summary, indent=1)
    if len(argv) == 3:
        Path(argv[2]).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    sizes = ", ".join(f"{k} {v['patients']}" for k, v in summary["datasets"].items() if "patients" in v)
    stays = ", ".join(f"{k} {v['stays']}" for k, v in summary["datasets"].items() if "stays" in v)
    print(f"round trip: {'identical' if summary['identical'] else 'DIFFERENT'} (patients per dataset: {sizes}; "
          f"stays: {stays}; not compared: {', '.join(summary['not_compared'])})")
    for name, v in summary["datasets"].items():
        for problem in v["problems"]:
            print(f"  {name}: {problem}")
    return 0 if summary["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
