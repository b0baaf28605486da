#!/usr/bin/env bash
# One prepared GPU session (docs/PERFORMANCE.md): the throughput table on CUDA for every preset, the real
# CLIs on CUDA (bf16 pretraining with and without --compile, fine-tuning), in order of importance, each
# step under its own time limit so one failure does not cost the rest. Results go to $OUT (default
# ./gpu_out): log.txt, throughput_cuda.json, throughput_cuda_compile.json.
#
#   bash benchmarks/gpu_check.sh            # on a machine with one CUDA GPU, from the repository root
#
# PYTHON picks the interpreter (default python3). STEPS picks sections (default: all of
# "throughput cli profile compile tcompile"). Wheels in .whl/ (for example the transformers version CI tests with)
# are installed to /tmp/site first when present. The repository need not be pip-installed.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec > >(tee -a "$OUT/log.txt") 2>&1
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
W=$(mktemp -d)
STEPS=${STEPS:-throughput cli profile compile tcompile}
want() { [[ " $STEPS " == *" $1 "* ]]; }

step() {  # step NAME LIMIT_S command...: run, then print its status and wall seconds
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*"
  local t0
  t0=$(date +%s%N)
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $name rc=$rc wall_s=$(( ($(date +%s%N) - t0) / 1000000 ))e-3"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, transformers, platform; print('python', platform.python_version(), 'torch', torch.__version__,
'transformers', transformers.__version__, torch.cuda.get_device_name(), 'cpus', __import__('os').cpu_count())"

# 1. The benchmark table, every preset, eager (the required measurement).
want throughput && step throughput 230 "$PY" benchmarks/throughput.py --device cuda --presets "${PRESETS:-tiny,small,medium,large}" \
  --kinds naive,bucketed,packed --steps 20 --warmup 4 --patients 8000 --naive-batch-size 64 \
  --max-tokens-per-batch 65536 --out "$OUT/throughput_cuda.json"

# 2. The real pipeline on CUDA: generate, convert, pretrain (bf16 by default on CUDA), fine-tune.
if want cli; then
step generate 40 "$PY" scripts/generate_synthetic_patients.py -n 20000 --output "$W/p.jsonl" --task-output "$W/task.csv"
step convert 40 "$PY" scripts/convert_synthetic_to_dataset.py --input "$W/p.jsonl" --output "$W/ds/synthetic.pt"
PRE=(--data-dir "$W/ds" --model-size large --num-epochs 1 --max-tokens-per-batch 65536 --learning-rate 1e-3
     --dataloader-num-workers 4 --eval-steps 1000 --save-steps 1000 --logging-steps 10)
step pretrain_eager 90 "$PY" scripts/pretrain-exmed-bert.py "${PRE[@]}" --output-dir "$W/pre"
step finetune 70 "$PY" scripts/finetune-exmed-bert.py --model-path "$W/pre/checkpoint-best" --task-data "$W/task.csv" \
  --data-dir "$W/ds" --output-dir "$W/ft" --num-epochs 1 --dataloader-num-workers 4
fi

# Where the time of one large-preset step goes (torch.profiler, top operators by GPU time).
want profile && step profile 90 "$PY" benchmarks/throughput.py --device cuda --presets large --kinds bucketed \
  --steps 10 --warmup 4 --patients 8000 --max-tokens-per-batch 65536 --profile --out "$OUT/throughput_profile.json"
# 3. torch.compile: the benchmark (large preset; compare with step 1, same machine) and the real CLI.
want tcompile && step throughput_compile 120 "$PY" benchmarks/throughput.py --device cuda --presets large --kinds bucketed,packed \
  --compile --steps 20 --warmup 8 --patients 8000 --naive-batch-size 64 --max-tokens-per-batch 65536 \
  --out "$OUT/throughput_cuda_compile.json"
want cli && want compile && step pretrain_compile 130 "$PY" scripts/pretrain-exmed-bert.py "${PRE[@]}" --compile --output-dir "$W/pre_c"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
echo "=== done"
