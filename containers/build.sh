#!/usr/bin/env bash
# Build one image target of containers/Dockerfile with docker or podman.
#
#   containers/build.sh cpu|gpu IMAGE:TAG
#
# Env: BASE_IMAGE, GPU_BASE_IMAGE (empty = the Dockerfile's pinned defaults),
#      GIT_COMMIT (image label), ENGINE, HOST_CA, NETWORK_HOST (containers/engine.sh),
#      EXTRA_BUILD_OPTS (more options for `build`, e.g. --no-cache for a cold build).
set -euo pipefail
target="${1:?usage: build.sh cpu|gpu IMAGE:TAG}"
image="${2:?usage: build.sh cpu|gpu IMAGE:TAG}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=containers/engine.sh
source "$here/engine.sh"

case "$image" in
  *:latest|*:) echo "refusing tag '${image##*:}': images are tagged by commit (TAG)" >&2; exit 2 ;;
  *:*) ;;
  *) echo "image '$image' has no tag: images are tagged by commit (TAG)" >&2; exit 2 ;;
esac

args=(--file "$root/containers/Dockerfile" --target "$target" --tag "$image"
      --build-arg "GIT_COMMIT=${GIT_COMMIT:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)}")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${GPU_BASE_IMAGE:-}" ] && args+=(--build-arg "GPU_BASE_IMAGE=$GPU_BASE_IMAGE")

read -r -a extra <<< "${EXTRA_BUILD_OPTS:-}"
args+=("${extra[@]}")

echo "+ ${ENGINE[*]} build ${BUILD_OPTS[*]} ${args[*]} $root"
start=$SECONDS
"${ENGINE[@]}" build "${BUILD_OPTS[@]}" "${args[@]}" "$root"
echo "built $image ($target) in $((SECONDS - start)) s"
"${ENGINE[@]}" image inspect --format '{{.Size}}' "$image" | awk -v i="$image" '{printf "%s: %.0f MB\n", i, $1/1e6}'
