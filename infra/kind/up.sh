#!/usr/bin/env bash
# Create the kind cluster (infra/kind/cluster.yaml), install Kubeflow Pipelines
# standalone from the kubeflow/pipelines kustomize manifests at a pinned release, and
# deploy the Cloud Storage emulator and the registry volume (infra/kind/storage.yaml).
#
#   infra/kind/up.sh [CLUSTER]            (make kind-up; default cluster name: fer)
#
# Env: KFP_VERSION (pinned default below), FAKE_GPU=1 (default) advertises one
# `nvidia.com/gpu` on the GPU-pool worker so pods that ask for a GPU still schedule
# (they run on CPU), KIND_IMAGE (node image, e.g. kindest/node:v1.31.x@sha256:...).
# Needs: kind, kubectl (with kustomize), docker or podman (KIND_EXPERIMENTAL_PROVIDER=podman).
set -euo pipefail
cluster="${1:-fer}"
KFP_VERSION="${KFP_VERSION:-2.14.3}"
here="$(cd "$(dirname "$0")" && pwd)"
manifests="github.com/kubeflow/pipelines/manifests/kustomize"

for tool in kind kubectl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (docs/cloud.md, 'KFP on kind')" >&2; exit 1; }
done

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  echo "kind cluster $cluster exists"
else
  kind create cluster --name "$cluster" --config "$here/cluster.yaml" ${KIND_IMAGE:+--image "$KIND_IMAGE"} --wait 120s
fi
ctx="kind-$cluster"

if [ "${FAKE_GPU:-1}" = 1 ]; then
  for node in $(kubectl --context "$ctx" get nodes -l cloud.google.com/gke-accelerator -o name); do
    kubectl --context "$ctx" patch "$node" --subresource=status --type=json \
      -p '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "1"}]' >/dev/null
    echo "$node: advertises nvidia.com/gpu=1 (no real GPU)"
  done
fi

echo "installing Kubeflow Pipelines $KFP_VERSION (standalone, platform-agnostic)"
kubectl --context "$ctx" apply -k "$manifests/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl --context "$ctx" wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl --context "$ctx" apply -k "$manifests/env/platform-agnostic?ref=$KFP_VERSION"
echo "waiting for the KFP deployments (first pull takes minutes)"
kubectl --context "$ctx" -n kubeflow wait --for=condition=available --timeout=900s deployment --all
echo "deploying the Cloud Storage emulator and the registry volume (infra/kind/storage.yaml)"
kubectl --context "$ctx" apply -f "$here/storage.yaml"
kubectl --context "$ctx" -n kubeflow wait --for=condition=available --timeout=300s deployment/fake-gcs
kubectl --context "$ctx" -n kubeflow get pods
echo
echo "next: make build kind-load compile; make kind-upload DATA=fer2013.zip; make kfp-forward &; make submit TARGET=kind"
