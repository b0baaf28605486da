#!/usr/bin/env bash
# MEDS in, MEDS out: a MEDS dataset and a MEDS label file -> convert -> pretrain -> fine-tune -> RF and
# XGBoost, each model writing predictions.parquet in the MEDS prediction schema (docs/DATASET.md, "Bring
# your MEDS data"). Without MEDS_ROOT and LABELS it first generates a tiny MEDS root (generate_synthetic_patients.py
# --format meds: synthetic patients, subject splits, the planted task as MEDS labels). Tiny settings: about a
# minute on a CPU.
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
  MEDS=$WORK/meds LABELS=$WORK/meds/task_labels/hf
  # 1. A tiny MEDS root from the generator: data/<split>/<n>.parquet, metadata/ (splits, codes), the planted
  #    task as MEDS labels in task_labels/hf/ (one prediction time per subject) and true risks beside them.
  "$PY" "$REPO/scripts/generate_synthetic_patients.py" -n "${NUM_PATIENTS:-160}" --format meds --output "$MEDS" \
    --start-date 2020-01-01 --end-date 2024-12-31 --task-horizon-days 365
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
