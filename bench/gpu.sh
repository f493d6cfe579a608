#!/usr/bin/env bash
# One device call: GPU throughput, the compact recipe sweep and a full DenseNet169 training,
# on a machine with JAX and no TensorFlow. Keras travels as wheels in .whl/ (see docs/benchmarks.md):
#   run(command="bash bench/gpu.sh", carry=[".whl", ".gpu"], timeout_s=560)
# Results: $OUT/results.jsonl (one JSON line per result), $OUT/card.txt, $OUT/logs.tgz, and each
# sweep candidate's trained network in $OUT/models/ (for bench/tta_views.py without retraining).
set -u
OUT=${OUT:-build/gpu}; mkdir -p "$OUT" build/gpu-logs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
export FER_GPU_RESULTS=$OUT/results.jsonl FER_GPU_MODELS=${FER_GPU_MODELS:-$OUT/models} FER_GPU_DEADLINE=$(( $(date +%s) + ${BUDGET_S:-420} ))
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/card.txt"
nproc >> "$OUT/card.txt"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jax-cache}
start=$(date +%s)
# STEPS picks what runs (default: all). SWEEP: lanes separated by spaces, each a comma-separated list of
# candidates (NAME or NAME@SEED) that one process trains in turn; the lanes run side by side.
STEPS=${STEPS:-"throughput sweep densenet"}
SWEEP=${SWEEP:-"base,base@13,no_class_weights rotation_zoom,no_smoothing no_augmentation,finetune_2"}
if [[ " $STEPS " == *" throughput "* ]]; then
  python3 bench/gpu.py throughput > build/gpu-logs/throughput.log 2>&1
  echo "throughput done in $(( $(date +%s) - start )) s"
fi
if [[ " $STEPS " == *" sweep "* ]]; then
  for lane in $SWEEP; do
    python3 bench/gpu.py sweep ${lane//,/ } > "build/gpu-logs/sweep-${lane%%,*}.log" 2>&1 &
  done
fi
if [[ " $STEPS " == *" densenet "* ]]; then
  python3 bench/gpu.py densenet > build/gpu-logs/densenet.log 2>&1 &
fi
wait
echo "all done in $(( $(date +%s) - start )) s"
tail -n 3 build/gpu-logs/*.log
tar czf "$OUT/logs.tgz" build/gpu-logs
cat "$OUT/results.jsonl"
