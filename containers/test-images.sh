#!/usr/bin/env bash
# Run each built image once, offline (--network none):
#   CPU image: `fer-pipeline validate` on a small generated FER-2013 zip, as non-root
#   GPU image: import TensorFlow and print its version and devices (no GPU here: CPU only)
#
#   containers/test-images.sh CPU_IMAGE GPU_IMAGE [PYTHON]
# PYTHON (default .venv/bin/python) generates the dataset with fer_pipeline.synthetic.
# SKIP_GPU=1 skips the GPU image (e.g. where it was not built).
set -euo pipefail
cpu="${1:?usage: test-images.sh CPU_IMAGE GPU_IMAGE [PYTHON]}"
gpu="${2:?usage: test-images.sh CPU_IMAGE GPU_IMAGE [PYTHON]}"
py="${3:-.venv/bin/python}"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=containers/engine.sh
source "$here/engine.sh"

work="$(mktemp -d /tmp/fer-test-images.XXXXXX)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
"$py" -c "import sys; from fer_pipeline import synthetic; synthetic.write_kaggle_zip(sys.argv[1])" "$work/fer2013.zip"
chmod 644 "$work/fer2013.zip"

run() { "${ENGINE[@]}" run --rm --network none "${RUN_OPTS[@]}" "$@"; }

echo "== $cpu: user"
uid="$(run "$cpu" id -u)"
[ "$uid" != 0 ] || { echo "FAIL: $cpu runs as root" >&2; exit 1; }
echo "uid $uid"
echo "== $cpu: fer-pipeline validate (generated Kaggle zip)"
start=$SECONDS
run --volume "$work:/data:ro" "$cpu" fer-pipeline validate /data/fer2013.zip
echo "ok ($((SECONDS - start)) s)"

if [ "${SKIP_GPU:-0}" = 1 ]; then
  echo "== $gpu: skipped (SKIP_GPU=1)"
  exit 0
fi
echo "== $gpu: TensorFlow devices"
start=$SECONDS
run "$gpu" python -c '
import os, tensorflow as tf
assert os.getuid() != 0, "runs as root"
print("tensorflow", tf.__version__, "built with CUDA:", tf.test.is_built_with_cuda())
print("devices:", tf.config.list_physical_devices())
print("GPUs:", tf.config.list_physical_devices("GPU") or "none (no GPU or driver on this host)")
'
echo "ok ($((SECONDS - start)) s)"
