#!/usr/bin/env bash
# The MEDS round trip: one generated cohort written as JSONL and as a MEDS root, each converted with its task
# labels, and the two conversions checked to be the same datasets (tokens, splits, labels, stays; see
# benchmarks/meds_roundtrip_check.py for what is compared).
#
#   bash benchmarks/meds_roundtrip.sh [N [OUT]]        N patients [2000], OUT [benchmarks/out/meds_roundtrip_N]
#
# Environment: SEED [42] generator and split seed (one value, so both paths split alike); TASK [hf];
# MAX_LEN [128]; PY [.venv/bin/python, else python3]. Writes OUT/check.json (the verdict) and
# OUT/timings.txt (wall time per step). Exit status 1 when the datasets differ.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
OUT=${2:-benchmarks/out/meds_roundtrip_$N}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
SEED=${SEED:-42}; TASK=${TASK:-hf}; MAX_LEN=${MAX_LEN:-128}
rm -rf "$OUT"; mkdir -p "$OUT"
: > "$OUT/timings.txt"
source benchmarks/steps.sh   # step NAME command... (the repository root is the working folder)
GEN=(scripts/generate_synthetic_patients.py -n "$N" --seed "$SEED" --task "$TASK")
# 1. The cohort as the guide's JSONL with its task CSV, and the same cohort (same seed) as a MEDS root.
step generate_json "$PY" "${GEN[@]}" --output "$OUT/json/patients.jsonl" --task-output "$OUT/json/task.csv"
step generate_meds "$PY" "${GEN[@]}" --format meds --output "$OUT/meds"
# 2. Both converted with their labels: the task CSV (prediction date) and the MEDS labels (prediction time).
step convert_json "$PY" scripts/convert_synthetic_to_dataset.py --input "$OUT/json/patients.jsonl" \
  --task-data "$OUT/json/task.csv" --output "$OUT/from_json/cohort.pt" --seed "$SEED" --max-length "$MAX_LEN"
step convert_meds "$PY" scripts/convert_synthetic_to_dataset.py --input "$OUT/meds" \
  --task-data "$OUT/meds/task_labels/$TASK" --output "$OUT/from_meds/cohort.pt" --seed "$SEED" --max-length "$MAX_LEN"
# 3. The same datasets? (vocab.json, every split and task split, patient by patient)
step check env PYTHONPATH=. "$PY" benchmarks/meds_roundtrip_check.py "$OUT/from_json/cohort.pt" \
  "$OUT/from_meds/cohort.pt" "$OUT/check.json"
