#!/usr/bin/env bash
# Build a stand-in base image where no container registry can be reached:
# a minimal Debian bookworm root (python3, venv, pip, CA certificates) made with
# debootstrap and imported into the local container engine.
#
#   containers/base-image-local.sh [IMAGE_NAME]        (default localhost/fer-base:bookworm)
#
# Env: ENGINE (podman|docker, auto-detected), DEBIAN_MIRROR (default deb.debian.org),
#      DEBIAN_SUITE (default bookworm). Needs root (debootstrap) and debootstrap installed.
# The result matches the default BASE_IMAGE closely enough (Debian bookworm,
# python3.11) that containers/Dockerfile builds on it unchanged:
#   make build BASE_IMAGE=localhost/fer-base:bookworm
set -euo pipefail

name="${1:-localhost/fer-base:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=containers/engine.sh
source "$here/engine.sh"

command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

root="$(mktemp -d /tmp/fer-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
start=$SECONDS
debootstrap --variant=minbase \
  --include=python3,python3-venv,python3-pip,ca-certificates \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Trim: apt lists and caches are not needed in a base layer.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | "${ENGINE[@]}" import \
  --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$name" >/dev/null
echo "built $name in $((SECONDS - start)) s"
"${ENGINE[@]}" image ls "$name"
