#!/usr/bin/env bash
# Push built images (already tagged with the registry path), e.g. to Artifact Registry:
#   containers/push.sh REGION-docker.pkg.dev/PROJECT/REPO/fer-pipeline-cpu:TAG ...
# Log in first (docs/cloud.md):
#   docker: gcloud auth configure-docker REGION-docker.pkg.dev
#   podman: gcloud auth print-access-token | podman login -u oauth2accesstoken --password-stdin REGION-docker.pkg.dev
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=containers/engine.sh
source "$here/engine.sh"
[ $# -gt 0 ] || { echo "usage: push.sh IMAGE:TAG..." >&2; exit 2; }
for image in "$@"; do
  case "$image" in *:latest) echo "refusing to push ':latest' ($image)" >&2; exit 2 ;; esac
  echo "+ ${ENGINE[*]} push $image"
  "${ENGINE[@]}" push "$image"
done
