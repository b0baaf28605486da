#!/usr/bin/env bash
# Demo-ClinVec initialisation against random initialisation where it should matter: many novel codes
# (codes missing from the embedding vocabulary, which ClinVec's hierarchical fallback initialises from
# their parent). Same data, seed and budget for both; writes the validation MLM loss curves, the
# fine-tuned AUROC on all test patients and on those whose histories hold a novel code.
#
#   bash benchmarks/clinvec_novel.sh [OUT]     (env: N [8000], NOVEL [0.2], SEED [7], PRE_EPOCHS [3],
#                                               FT_EPOCHS [3], LR [5e-4], EVAL_STEPS [50], SIZE [small])
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/out/clinvec_novel}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
N=${N:-8000}; NOVEL=${NOVEL:-0.2}; SEED=${SEED:-7}; PRE_EPOCHS=${PRE_EPOCHS:-3}; FT_EPOCHS=${FT_EPOCHS:-3}
LR=${LR:-5e-4}; EVAL_STEPS=${EVAL_STEPS:-50}; SIZE=${SIZE:-small}
mkdir -p "$OUT"
$PY scripts/generate_synthetic_patients.py -n "$N" --seed "$SEED" --novel-prob "$NOVEL" \
  --output "$OUT/patients.jsonl" --task-output "$OUT/task.csv"
$PY scripts/convert_synthetic_to_dataset.py --input "$OUT/patients.jsonl" --output "$OUT/data/synthetic.pt" \
  --task-data "$OUT/task.csv" --max-length 128
for init in clinvec random; do
  FLAGS=(); [ "$init" = clinvec ] && FLAGS=(--use-clinvec)
  $PY scripts/pretrain-exmed-bert.py "${FLAGS[@]}" --data-dir "$OUT/data" --output-dir "$OUT/pre_$init" \
    --model-size "$SIZE" --num-epochs "$PRE_EPOCHS" --learning-rate "$LR" --batch-size 32 --eval-steps "$EVAL_STEPS"
  $PY scripts/finetune-exmed-bert.py --model-path "$OUT/pre_$init" --data-dir "$OUT/data" --task-data "$OUT/task.csv" \
    --output-dir "$OUT/ft_$init" --num-epochs "$FT_EPOCHS" --learning-rate "$LR" --batch-size 32
done
$PY benchmarks/clinvec_novel_report.py "$OUT"
