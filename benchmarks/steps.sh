# Shared by the benchmark scripts: `source benchmarks/steps.sh` after setting OUT.
# step NAME command...: run it, log the command and its wall time to the console and $OUT/timings.txt
step() {
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/timings.txt"
  local t0=$SECONDS
  "$@"
  echo "   $name took $((SECONDS - t0)) s" | tee -a "$OUT/timings.txt"
}
