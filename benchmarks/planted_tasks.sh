#!/usr/bin/env bash
# ExMed-BERT against RF and XGBoost (code counts and time windows) on a planted synthetic task, with the
# oracle on the same test patients. One run = one row set of docs/EVALUATION.md's tables.
#
#   bash benchmarks/planted_tasks.sh TASK N [OUT]        e.g. bash benchmarks/planted_tasks.sh temporal 8000
#
# TASK: hf | temporal (generate_synthetic_patients.py --task). Environment (defaults in brackets):
#   SEED [7] generator seed; SPLIT_SEED [42] conversion seed; MAX_LEN [128]; SIZE [small];
#   PRE_EPOCHS [3]; PRE_LR [5e-4]; FT_EPOCHS [3]; FT_LR [5e-4]; BATCH [32]; CLINVEC [1] (demo ClinVec init);
#   BERT [1] (0 = baselines and oracle only, minutes instead of tens of minutes on a CPU);
#   PRE_ARGS [] extra pretraining flags, e.g. PRE_ARGS="--time-buckets 12" (fine-tuning follows the model).
# Writes OUT/report.md + report.json (the comparison) and OUT/timings.txt (wall time per stage).
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?task: hf or temporal}
N=${2:?number of patients}
OUT=${3:-benchmarks/out/${TASK}_${N}}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
SEED=${SEED:-7}; SPLIT_SEED=${SPLIT_SEED:-42}; MAX_LEN=${MAX_LEN:-128}; SIZE=${SIZE:-small}
PRE_EPOCHS=${PRE_EPOCHS:-3}; PRE_LR=${PRE_LR:-5e-4}; FT_EPOCHS=${FT_EPOCHS:-3}; FT_LR=${FT_LR:-5e-4}
BATCH=${BATCH:-32}; CLINVEC=${CLINVEC:-1}; BERT=${BERT:-1}; PRE_ARGS=${PRE_ARGS:-}
mkdir -p "$OUT"
: > "$OUT/timings.txt"
source benchmarks/steps.sh   # step NAME command... (the repository root is the working folder)
step generate $PY scripts/generate_synthetic_patients.py -n "$N" --seed "$SEED" --task "$TASK" \
  --output "$OUT/patients.jsonl" --task-output "$OUT/task.csv"
step convert $PY scripts/convert_synthetic_to_dataset.py --input "$OUT/patients.jsonl" \
  --output "$OUT/data/synthetic.pt" --task-data "$OUT/task.csv" --max-length "$MAX_LEN" --seed "$SPLIT_SEED"
RUNS=()
# every baseline of the registry (exmed_bert/baselines/registry.py), each on both feature sets
BASELINES=$($PY -c "from exmed_bert.baselines.registry import NAMES; print(*NAMES)")
for est in $BASELINES; do
  for feat in counts windows; do
    step "$est-$feat" $PY "scripts/train-$est.py" --data-dir "$OUT/data" --task-data "$OUT/task.csv" \
      --features "$feat" --output-dir "$OUT/$est-$feat"
    RUNS+=("$OUT/$est-$feat")
  done
done
if [ "$BERT" = 1 ]; then
  INIT=(); [ "$CLINVEC" = 1 ] && INIT=(--use-clinvec)
  step pretrain $PY scripts/pretrain-exmed-bert.py "${INIT[@]}" --data-dir "$OUT/data" --output-dir "$OUT/pretrained" \
    --model-size "$SIZE" --num-epochs "$PRE_EPOCHS" --learning-rate "$PRE_LR" --batch-size "$BATCH" --plos $PRE_ARGS
  step finetune $PY scripts/finetune-exmed-bert.py --model-path "$OUT/pretrained" --data-dir "$OUT/data" \
    --task-data "$OUT/task.csv" --output-dir "$OUT/finetuned" --num-epochs "$FT_EPOCHS" \
    --learning-rate "$FT_LR" --batch-size "$BATCH"
  RUNS=("$OUT/finetuned" "${RUNS[@]}")
fi
step report $PY scripts/compare-models.py --runs "${RUNS[@]}" --output "$OUT/report.md"
echo "report: $OUT/report.md"
