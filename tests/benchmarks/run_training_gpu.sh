#!/usr/bin/env bash
# DP-SGD on a GPU in one go: the engine's device tests, throughput (ours, Opacus, non-private) at batch 512
# and 4096, the per-example methods, and the 40-epoch MNIST accuracy run at ε = 3. Each step has its own
# time limit, so one that hangs or fails leaves the others' results. JSON lines go to $OUT/results.jsonl,
# everything else to $OUT/log (and stdout).
#
#   OUT=/tmp/out MNIST_DIR=/path/to/mnist bash tests/benchmarks/run_training_gpu.sh
#   SCALE=tiny ... (a few steps of each: checks the script itself, on cpu too)
#
# Needs torch, numpy, scipy, scikit-learn, dp-accounting and opacus 1.6.0; no Django, no database.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dpsgd-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: "${MNIST_DIR:?MNIST_DIR must name the folder of the four MNIST IDX files}"
export MNIST_DIR
RESULTS=$OUT/results.jsonl
LOG=$OUT/log
: >"$RESULTS"
exec > >(tee -a "$LOG") 2>&1

if [ "${SCALE:-full}" = tiny ]; then
  T512="--steps 2 --rounds 1 --warmup 1"; T4096="--steps 1 --rounds 1 --warmup 1"
  METHODS="--steps 1 --rounds 1"; ACCURACY="--epochs 1 --eval-every 1"; BATCH_BIG=1024
else
  T512="--steps 100 --rounds 5 --warmup 5"; T4096="--steps 30 --rounds 5 --warmup 3"
  METHODS="--steps 20 --rounds 5"; ACCURACY="--epochs 40 --eval-every 5"; BATCH_BIG=4096
fi

DEADLINE=${DEADLINE:-380}  # seconds from the start: every step's limit is cut to what is left of it

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, report the exit status and the seconds
  local name=$1 limit=$2 started=$SECONDS rc left=$((DEADLINE - SECONDS - 5))
  shift 2
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then echo "=== $name: skipped, ${left}s left of the deadline"; return; fi
  echo "=== $name (limit ${limit}s): $*"
  timeout "$limit" "$@"
  rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - started))s"
}

bench() {  # bench NAME LIMIT_S ARGS...: one bench_training.py mode, its JSON line appended to results.jsonl
  local name=$1 limit=$2
  shift 2
  step "$name" "$limit" bash -c 'set -o pipefail; python3 tests/benchmarks/bench_training.py "$@" | tee -a "$0"' \
    "$RESULTS" "$@"
}

echo "=== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu \
  --format=csv 2>&1 || true
python3 -c 'import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda,
  torch.cuda.is_available() and torch.cuda.get_device_name(0))'
python3 -c 'import opacus, dp_accounting, sklearn; print("opacus", opacus.__version__)'

step device-tests 90 python3 -m pytest -q -p no:cacheprovider -p no:django tests/privacy/test_dpsgd_cuda.py
bench throughput-512 120 throughput --batch 512 $T512
# the accuracy run's length from our throughput at 512: 40 epochs of 60,000, plus calibration and evaluation
ESTIMATE=$(python3 -c '
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if "dpsgd_mnist_throughput" in line]
print(int(60000 * int(sys.argv[2]) / rows[-1]["examples_per_s"]["ours"] * 1.2 + 30) if rows else 9999)
' "$RESULTS" "$(echo $ACCURACY | cut -d' ' -f2)" 2>/dev/null || echo 9999)
echo "=== accuracy: estimated ${ESTIMATE}s, $((DEADLINE - SECONDS))s left"
if [ "$ESTIMATE" -lt $((DEADLINE - SECONDS - 60)) ]; then
  bench accuracy $((ESTIMATE * 2 > 90 ? ESTIMATE * 2 : 90)) accuracy --batch 512 $ACCURACY
else
  echo "=== accuracy: skipped, it would not fit"
fi
bench throughput-$BATCH_BIG 90 throughput --batch $BATCH_BIG --physical 8192 $T4096
bench methods-512 60 methods --batch 512 $METHODS
step cpu-tests 60 python3 -m pytest -q -p no:cacheprovider -p no:django -n "${PYTEST_WORKERS:-4}" -k "not real_mnist" \
  tests/privacy/test_dpsgd.py tests/privacy/test_dpsgd_audit.py
echo "=== done in ${SECONDS}s"
