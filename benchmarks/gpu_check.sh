#!/usr/bin/env bash
# The GPU measurements docs/PERFORMANCE.md asks for ("GPU"), in order of importance, under one wall-clock
# budget: a step that no longer fits is skipped and says so. Everything goes to $OUT (default ./gpu_out):
# log.txt (all output), steps.tsv (name, rc, wall s), tests.txt, throughput.json (+ .md), profile_*.txt,
# kernels.json, cli_eager.json / cli_compile.json.
#
#   bash benchmarks/gpu_check.sh             # one CUDA GPU, from the repository root; ~8 minutes
#   STEPS=cli bash benchmarks/gpu_check.sh   # only the real CLI, eager vs --compile (~4-5 minutes)
#   SMOKE=1 bash benchmarks/gpu_check.sh     # on CPU with tiny sizes: checks the script, measures nothing
#
# Steps (STEPS, default "env throughput tests profile cli kernels"; cli and kernels rarely fit in 8 minutes after
# the others, and say so):
#   env         GPU, driver, python/torch/transformers versions
#   throughput  the table: every preset in PRESETS x KINDS (naive, bucketed, packed-SDPA, packed-flex) x
#               PRECISIONS (fp32 and bf16 in the same process, same batches), peak GPU memory per row (~4-5 min)
#   tests       tests/test_attention_backends.py on CUDA: packed vs padded loss, FlexAttention vs SDPA (bf16
#               and fp32, forward and gradients), no cross-patient attention
#   profile     torch.profiler of `large` steps in bf16, bucketed (SDPA) and packed-flex
#   cli         generate CLI_PATIENTS (200,000) patients, convert, pretrain `large` 1 epoch eager, then with
#               --compile; total wall time of each and real tokens/s over its training steps
#   kernels     `large` with attention dropout 0 on every row (FlexAttention has none), tf32 and bf16,
#               bucketed/packed x SDPA/flex: the kernels compared like for like
# Other variables: BUDGET_S (480), PRESETS (large,medium,small,tiny), KINDS, PRECISIONS (bf16,fp32),
# CLI_PATIENTS, FLEX_DYNAMIC (true|auto, how the flex kernel is compiled), PYTHON (python3). Wheels in .whl/
# (for example the transformers version CI tests with) are installed to /tmp/site first when present.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec > >(tee -a "$OUT/log.txt") 2>&1
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
W=$(mktemp -d)
STEPS=${STEPS:-env throughput tests profile cli kernels}
BUDGET_S=${BUDGET_S:-480}
START=$(date +%s)
want() { [[ " $STEPS " == *" $1 "* ]]; }
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

step() {  # step NAME LIMIT_S command...: run under min(LIMIT_S, budget left); print and record status and wall s
  local name=$1 limit=$2
  shift 2
  local lim
  lim=$(left)
  (( lim > limit )) && lim=$limit
  if (( lim < 15 )); then
    echo "=== $name skipped: $(left) s of BUDGET_S=$BUDGET_S left"
    printf '%s\tskipped\t0\n' "$name" >> "$OUT/steps.tsv"
    return 1
  fi
  echo "=== $name (limit ${lim} s): $*"
  local t0 rc
  t0=$(date +%s%N)
  timeout "$lim" "$@"
  rc=$?
  LAST_WALL=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  echo "=== $name rc=$rc wall_s=$LAST_WALL"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$LAST_WALL" >> "$OUT/steps.tsv"
  return $rc
}

if [[ -n "${SMOKE:-}" ]]; then  # CPU, tiny: every command runs, nothing is a measurement
  DEV=cpu PRESETS=${PRESETS:-tiny} PROFILE_PRESET=tiny MODEL=tiny CLI_PATIENTS=${CLI_PATIENTS:-300}
  SIZES=(--patients 300 --max-length 128 --naive-batch-size 4 --max-tokens-per-batch 2048 --steps 2 --warmup 1
         --flex-warmup 1 --workers 0)
  CLI_BUDGET=(--max-tokens-per-batch 2048 --dataloader-num-workers 0 --device cpu)
  CLI_MIN_S=60
else
  DEV=cuda PRESETS=${PRESETS:-large,medium,small,tiny} PROFILE_PRESET=large MODEL=large  # large first: it matters most
  CLI_PATIENTS=${CLI_PATIENTS:-200000}
  SIZES=(--patients 8000 --naive-batch-size 64 --max-tokens-per-batch 65536 --steps 20 --warmup 4 --flex-warmup 8)
  CLI_BUDGET=(--max-tokens-per-batch 65536 --dataloader-num-workers 4)
  CLI_MIN_S=240  # generate + convert + two 1-epoch `large` runs on 200,000 patients
fi
KINDS=${KINDS:-naive,bucketed,packed,packed-flex}
PRECISIONS=${PRECISIONS:-bf16,fp32}  # bf16 first: a worker cut off by its timeout keeps what it measured
BENCH=("$PY" benchmarks/throughput.py --device "$DEV" --no-data-path --flex-dynamic "${FLEX_DYNAMIC:-true}" "${SIZES[@]}")

# env: what this is measured on
if want env; then
  [[ $DEV == cuda ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, transformers, platform, os; print('python', platform.python_version(), 'torch', torch.__version__,
'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU',
'cpus', os.cpu_count())"
fi

# throughput: the table, every preset, bf16 next to fp32 (one subprocess per preset and kind)
TB=$(( $(left) - 15 )); (( TB > 270 )) && TB=270  # the benchmark stops starting workers in time to write its table
want throughput && step throughput 300 "${BENCH[@]}" --presets "$PRESETS" --kinds "$KINDS" \
  --precisions "$PRECISIONS" --worker-timeout 150 --budget-s "$TB" --out "$OUT/throughput.json"
[[ -f "$OUT/throughput.json" ]] && "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['table'])" \
  "$OUT/throughput.json" > "$OUT/throughput.md"

# tests: correctness of the attention backends on this device (the CPU variant runs in CI)
if want tests; then
  step tests 120 env EXMED_TEST_DEVICE=$DEV "$PY" -m pytest tests/test_attention_backends.py -q -rs \
    -p no:cacheprovider --junitxml="$OUT/tests.xml" > "$OUT/tests.txt" 2>&1
  cat "$OUT/tests.txt"
fi

# profile: where one `large` bf16 step's GPU time goes, SDPA buckets and FlexAttention packing
want profile && step profile 80 "${BENCH[@]}" --presets "$PROFILE_PRESET" --kinds bucketed,packed-flex \
  --precisions bf16 --steps 6 --profile --profile-dir "$OUT" --worker-timeout 75 --out "$OUT/throughput_profile.json"

# cli: the real pipeline, 1 epoch of `large` on CLI_PATIENTS patients, eager vs --compile (total wall incl. compile)
if want cli; then
  if (( $(left) < CLI_MIN_S )); then
    echo "=== cli skipped: $(left) s left, needs ~$CLI_MIN_S; run STEPS=cli bash benchmarks/gpu_check.sh"
    printf 'cli\tskipped\t0\n' >> "$OUT/steps.tsv"
  else
    step generate 60 "$PY" scripts/generate_synthetic_patients.py -n "$CLI_PATIENTS" --output "$W/p.jsonl" \
      --task-output "$W/task.csv" \
    && step convert 120 "$PY" scripts/convert_synthetic_to_dataset.py --input "$W/p.jsonl" --output "$W/ds/synthetic.pt"
    PRE=(--data-dir "$W/ds" --model-size "$MODEL" --num-epochs 1 --learning-rate 1e-3 --eval-steps 100000
         --save-steps 100000 --logging-steps 10 "${CLI_BUDGET[@]}")
    for mode in eager compile; do
      flag=(); [[ $mode == compile ]] && flag=(--compile)
      if [[ -f "$W/ds/synthetic_train.pt" ]] && step "pretrain_$mode" 200 "$PY" scripts/pretrain-exmed-bert.py "${PRE[@]}" \
          "${flag[@]}" --output-dir "$W/pre_$mode"; then
        "$PY" benchmarks/cli_throughput.py --run-dir "$W/pre_$mode" --train-data "$W/ds/synthetic_train.pt" \
          --wall-s "$LAST_WALL" --benchmark "$OUT/throughput.json" --label "$mode" --out "$OUT/cli_$mode.json"
      fi
    done
  fi
fi

# kernels: like for like (attention dropout 0 everywhere), `large`, TF32 and bf16, SDPA vs FlexAttention
want kernels && step kernels 150 "${BENCH[@]}" --presets "$PROFILE_PRESET" \
  --kinds bucketed,packed,bucketed-flex,packed-flex --precisions "$([[ $DEV == cuda ]] && echo tf32,bf16 || echo fp32)" \
  --attention-dropout 0 --worker-timeout 100 --out "$OUT/kernels.json"

[[ $DEV == cuda ]] && nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
echo "=== done in $(( $(date +%s) - START )) s of BUDGET_S=$BUDGET_S; steps:"
cat "$OUT/steps.tsv"
