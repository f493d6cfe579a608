#!/usr/bin/env bash
# Forward the KFP UI (and the API behind it, /apis/v2beta1) to localhost.
#   infra/kind/port-forward.sh [PORT]     (make kfp-forward; default 8080, Ctrl-C stops)
# KFP_HOST=http://localhost:PORT in config/submit.env points `make submit TARGET=kind` here.
set -euo pipefail
port="${1:-8080}"
ctx="${KUBE_CONTEXT:-kind-${KIND_CLUSTER:-fer}}"
echo "KFP UI and API on http://localhost:$port (context $ctx); Ctrl-C stops"
exec kubectl --context "$ctx" -n kubeflow port-forward --address 127.0.0.1 svc/ml-pipeline-ui "$port:80"
