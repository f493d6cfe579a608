#!/usr/bin/env bash
# Load locally built images into the kind nodes (no registry needed).
#   infra/kind/load-images.sh CLUSTER IMAGE...      (make kind-load)
# With podman the images are saved to an archive first; a name without a registry
# host is also tagged docker.io/NAME, which is how the kubelet resolves it.
set -euo pipefail
cluster="${1:?usage: load-images.sh CLUSTER IMAGE...}"
shift
here="$(cd "$(dirname "$0")/../../containers" && pwd)"
# shellcheck source=containers/engine.sh
source "$here/engine.sh"
for image in "$@"; do
  case "${image%%/*}" in
    *.*|*:*|localhost) ref="$image" ;;
    *) ref="docker.io/$image" ;;
  esac
  if [ "${ENGINE[0]}" = docker ]; then
    [ "$ref" = "$image" ] || docker tag "$image" "$ref"
    kind load docker-image --name "$cluster" "$ref"
  else
    "${ENGINE[@]}" tag "$image" "$ref"
    archive="$(mktemp /tmp/fer-image.XXXXXX.tar)"
    "${ENGINE[@]}" save --format docker-archive -o "$archive" "$ref"
    kind load image-archive --name "$cluster" "$archive"
    rm -f "$archive"
  fi
  echo "loaded $ref into kind cluster $cluster"
done
