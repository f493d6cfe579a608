#!/usr/bin/env bash
# Delete the kind cluster (and with it KFP and every run's artifacts in its MinIO).
#   infra/kind/down.sh [CLUSTER]      (make kind-down; default fer)
set -euo pipefail
cluster="${1:-fer}"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind delete cluster --name "$cluster"
else
  echo "no kind cluster named $cluster"
fi
