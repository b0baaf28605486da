"""What a conversion says it did: the manifest's code report (kept and ignored code families, stays left
out), the one-line summary printed at the end, and the message of a run whose every record was rejected.
"""

from __future__ import annotations

from collections import Counter

from exmed_bert.convert.intake import Intake
from exmed_bert.convert.validate import STAY_CAP_DAYS, RecordParser


def code_report(source, parser: RecordParser) -> dict:
    """What the manifest says about the codes read: stays left out as implausible (any input), events or
    rows left out per code family, and what the input's format adds (`Source.report`: for MEDS the rows
    kept and ignored per code family, the 50 largest of each, and dataset.json)."""
    out: dict = {"implausible_stays": {"cap_days": STAY_CAP_DAYS, "left_out": parser.implausible_stays}}
    # --other-codes: the mode, and events/rows left out per code family (JSON: events of an unknown system
    # with drop, or too long; MEDS: every row the reader did not use, plus those)
    ignored = Counter(parser.ignored)
    ignored.update(source.ignored)
    out["other_codes"] = "keep" if parser.keep_other else "drop"
    out["ignored_codes"] = dict(ignored.most_common(50))
    out.update(source.report())
    return out


def families(counts: dict, top: int = 4) -> str:
    """'LAB 5000, SNOMED 120, ... (+3 more)' from {family: rows}, largest first (ties by name)."""
    items = sorted(counts.items(), key=lambda x: (-x[1], x[0]))
    text = ", ".join(f"{k} {v}" for k, v in items[:top])
    return text + (f" (+{len(items) - top} more)" if len(items) > top else "")


def all_rejected_message(input, run: Intake, source, paths: dict, kept_conversion: bool = False) -> str:
    msg = (f"{input}: all {run.n_records} records were rejected (first reasons: {', '.join(run.reasons)})")
    msg += source.rejected_hint()
    msg += f"; see {paths['rejected']} and {paths['manifest']}, or --on-error fail for the first bad record"
    if kept_conversion:
        msg += f" (the conversion already in {paths['manifest'].parent} is left as it was)"
    return msg


def summary_line(manifest: dict, paths: dict) -> str:
    splits = ", ".join(f"{k} {v['patients']}" for k, v in manifest["splits"].items())
    unk = sum(v["unk_tokens"] for k, v in manifest["splits"].items() if k != "train")
    line = (f"converted {manifest['records'] - manifest['rejected']} of {manifest['records']} patients ({splits}); "
            f"vocabulary {manifest['vocab_size']} tokens; [UNK] in val/test {unk}; ")
    if manifest.get("meds_kept_codes") is not None:
        line += (f"MEDS rows kept {families(manifest['meds_kept_codes']) or 'none'}, "
                 f"ignored {families(manifest.get('meds_ignored_codes', {})) or 'none'}; "
                 f"{manifest.get('meds_duplicate_rows_dropped', 0)} duplicate rows dropped; ")
    if manifest.get("subjects_in_several_files"):
        line += (f"{manifest['subjects_in_several_files']} subjects have rows in more than one shard: each is read "
                 "from the first shard that holds it, its rows in later shards left out (not rejected); ")
    stays = manifest.get("implausible_stays") or {}
    if stays.get("left_out"):
        line += f"{stays['left_out']} hospital stays over {stays['cap_days']} days left out; "
    if manifest.get("split_source") == "hash" and manifest.get("meds_kept_codes") is not None and \
            (manifest.get("args") or {}).get("split_source") == "auto":
        line += "no metadata/subject_splits.parquet: splits by the seeded subject-id hash; "
    if manifest.get("split_source") == "meds":
        line += (f"splits from MEDS subject_splits.parquet ({manifest.get('patients_outside_the_meds_splits', 0)} "
                 "patients outside train/tuning/held_out left out); ")
    if manifest["rejected"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(manifest["reject_reasons"].items(), key=lambda x: -x[1]))
        line += f"rejected {manifest['rejected']} ({reasons}; see {paths['rejected']})"
    else:
        line += "rejected 0"
    if "task" in manifest:
        t = manifest["task"]
        task_splits = ", ".join(f"{k} {v['patients']}" for k, v in t["splits"].items())
        r = t["label_rows"]
        bad = "".join(f", {n} {k}" for k, n in r["bad_reasons"].items())
        line += (f"; task: {task_splits} ({t['unlabelled_patients']} patients unlabelled); label rows: {r['read']} read"
                 f" = {r['kept']} kept + {r['kept_without_history']} kept with no event before their time ([CLS] only)"
                 f" + {r['subject_not_in_data']} subject not in the data + {r['subject_in_no_split']} subject in no"
                 f" split + {r['bad']} bad{bad}")
    return line + f"; written to {paths['vocab'].parent}"
