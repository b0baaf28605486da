#!/usr/bin/env bash
# MEDS in, MEDS out: a MEDS dataset and a MEDS label file -> convert -> pretrain -> fine-tune -> RF and
# XGBoost, each model writing predictions.parquet in the MEDS prediction schema (docs/DATASET.md, "Bring
# your MEDS data"). Without MEDS_ROOT and LABELS it first builds a tiny MEDS root (synthetic patients as
# MEDS events, subject splits, the planted task as a label file). Tiny settings: about a minute on a CPU.
#
#   bash examples/meds_end_to_end.sh [WORKDIR [MEDS_ROOT LABELS]]     # WORKDIR defaults to examples_out/meds
set -euo pipefail
WORK=${1:-examples_out/meds}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
mkdir -p "$WORK"

if [ $# -ge 3 ]; then
  MEDS=$2 LABELS=$3
else
  MEDS=$WORK/meds LABELS=$WORK/labels/task.parquet
  # 1. A tiny MEDS root: generated patients (JSONL) written as subject_id/time/code rows, with splits.
  "$PY" "$REPO/scripts/generate_synthetic_patients.py" -n "${NUM_PATIENTS:-160}" --output "$WORK/patients.jsonl" \
    --task-output "$WORK/task.csv" --start-date 2020-01-01 --end-date 2024-12-31 --task-horizon-days 365
  "$PY" - "$WORK" <<'EOF'
import csv, datetime as dt, json, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq

work = Path(sys.argv[1])
rows, subjects = [], []  # (subject_id, time, code); subject ids
for line in open(work / "patients.jsonl"):
    p = json.loads(line)
    sid = int(p["patient_id"].lstrip("P"))
    subjects.append(sid)
    rows += [(sid, dt.datetime.fromisoformat(p["birth_date"]), "MEDS_BIRTH"), (sid, None, f"GENDER//{p['sex']}")]
    # the generator's events have dates only: stamped at the end of their day, as careful ETLs do, so those
    # of a prediction date stay after its noon prediction time (the generator's task starts at that date)
    for key, vocab in (("diagnoses", "ICD10CM"), ("prescriptions", "ATC"), ("procedures", "CPT")):
        rows += [(sid, dt.datetime.fromisoformat(e["date"]) + dt.timedelta(hours=23, minutes=59, seconds=59),
                  f"{vocab}//{e['code']}") for e in p.get(key, [])]
    for s in p.get("hospitalizations", []):
        rows += [(sid, dt.datetime.fromisoformat(s["admission_date"]), "HOSPITAL_ADMISSION//IP"),
                 (sid, dt.datetime.fromisoformat(s["discharge_date"]), "HOSPITAL_DISCHARGE//HOME")]
rows.sort(key=lambda r: (r[0], r[1] or dt.datetime.min))
(work / "meds" / "data").mkdir(parents=True, exist_ok=True)
(work / "meds" / "metadata").mkdir(exist_ok=True)
(work / "labels").mkdir(exist_ok=True)
pq.write_table(pa.table({"subject_id": pa.array([r[0] for r in rows], pa.int64()),
                         "time": pa.array([r[1] for r in rows], pa.timestamp("us")),
                         "code": [r[2] for r in rows]}), work / "meds" / "data" / "0.parquet")
split = {8: "tuning", 9: "held_out"}  # subject id mod 10; the rest train
pq.write_table(pa.table({"subject_id": pa.array(subjects, pa.int64()),
                         "split": [split.get(s % 10, "train") for s in subjects]}),
               work / "meds" / "metadata" / "subject_splits.parquet")
(work / "meds" / "metadata" / "dataset.json").write_text(json.dumps({"dataset_name": "tiny synthetic",
                                                                      "dataset_version": "1"}))
# the task: one prediction time per subject (noon of the task's prediction date), the label as boolean_value
# (MEDS labels may have several per subject, one per admission say: each is a task row)
task = list(csv.DictReader(open(work / "task.csv")))
pq.write_table(pa.table({
    "subject_id": pa.array([int(r["patient_id"].lstrip("P")) for r in task], pa.int64()),
    "prediction_time": pa.array([dt.datetime.fromisoformat(r["prediction_date"]) + dt.timedelta(hours=12)
                                 for r in task], pa.timestamp("us")),
    "boolean_value": [r["label"] == "1" for r in task]}), work / "labels" / "task.parquet")
print(f"MEDS root {work / 'meds'}: {len(rows)} rows, {len(subjects)} subjects; labels {work / 'labels' / 'task.parquet'}")
EOF
fi

# 2. Convert: MEDS splits of record, the task split cut at each subject's prediction time.
"$PY" "$REPO/scripts/convert_synthetic_to_dataset.py" --input "$MEDS" --output "$WORK/pretrain_stuff/meds.pt" \
  --task-data "$LABELS" --max-length 64
# 3. Pretrain a tiny model for one epoch.
"$PY" "$REPO/scripts/pretrain-exmed-bert.py" --data-dir "$WORK/pretrain_stuff" --dataset-name meds --output-dir "$WORK/model" \
  --model-size tiny --num-epochs 1 --batch-size 16 --learning-rate 2e-3 --logging-steps 1
# 4. Fine-tune on the MEDS labels (one epoch), then the two baselines on the same task split.
"$PY" "$REPO/scripts/finetune-exmed-bert.py" --model-path "$WORK/model/checkpoint-best" --task-data "$LABELS" \
  --data-dir "$WORK/pretrain_stuff" --output-dir "$WORK/finetuned" --num-labels 2 --num-epochs 1 \
  --learning-rate 5e-4 --metric-for-best-model loss --n-bootstrap 50
"$PY" "$REPO/scripts/train-rf.py" --data-dir "$WORK/pretrain_stuff" --task-data "$LABELS" \
  --output-dir "$WORK/rf" --n-estimators 50 --n-bootstrap 50
"$PY" "$REPO/scripts/train-xgboost.py" --data-dir "$WORK/pretrain_stuff" --task-data "$LABELS" \
  --output-dir "$WORK/xgboost" --n-estimators 50 --n-bootstrap 50

echo
echo "MEDS predictions (subject_id, prediction_time, boolean_value, predicted_boolean_value/_probability):"
for run in finetuned rf xgboost; do echo "  $WORK/$run/predictions.parquet (metrics: $WORK/$run/metrics.json)"; done
