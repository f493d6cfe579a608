#!/usr/bin/env bash
# Put a FER-2013 source into the kind cluster's Cloud Storage emulator, where the kind
# pipeline's default data_source points (gs://fer-kind/input/fer2013.zip); no cloud account.
#
#   infra/kind/upload.sh CLUSTER IMAGE DATA [URI]       (make kind-upload DATA=...)
#
# A short-lived pod of the CPU image (loaded by make kind-load) receives the file with
# `kubectl cp` and uploads it from inside the cluster, so the emulator's resumable-upload
# URL (the in-cluster Service) is reachable.
set -euo pipefail
cluster="${1:?usage: upload.sh CLUSTER IMAGE DATA [URI]}"
image="${2:?usage: upload.sh CLUSTER IMAGE DATA [URI]}"
data="${3:?usage: upload.sh CLUSTER IMAGE DATA [URI] (DATA= the Kaggle zip or fer2013.csv)}"
uri="${4:-gs://fer-kind/input/fer2013.zip}"
emulator="${EMULATOR_URL:-http://fake-gcs.kubeflow.svc.cluster.local:4443}"
[ -f "$data" ] || { echo "DATA=$data is not a file; pass the Kaggle zip or fer2013.csv" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "kubectl is not installed (docs/cloud.md, 'KFP on kind')" >&2; exit 1; }
k=(kubectl --context "kind-$cluster" -n kubeflow)
pod="fer-upload-$$"
trap '"${k[@]}" delete pod "$pod" --ignore-not-found --wait=false >/dev/null' EXIT
"${k[@]}" run "$pod" --image "$image" --image-pull-policy Never --restart Never \
  --env "STORAGE_EMULATOR_HOST=$emulator" --command -- sleep 3600 >/dev/null
"${k[@]}" wait --for condition=Ready --timeout 120s "pod/$pod" >/dev/null
"${k[@]}" cp "$data" "$pod:/tmp/upload"
"${k[@]}" exec "$pod" -- python -c \
  "import sys; from fer_pipeline import storage; storage.upload_file('/tmp/upload', sys.argv[1])" "$uri"
echo "uploaded $data to $uri (kind cluster $cluster); the kind pipeline reads it by default"
