#!/usr/bin/env bash
# Install a container engine from Debian's packages where none is usable:
# podman, runc (containers/engine.sh runs podman with --runtime runc) and debootstrap
# (containers/base-image-local.sh, for hosts that reach no container registry).
# Does nothing when a Docker daemon answers or podman, runc and debootstrap are present.
#
#   containers/install-engine.sh            (root, or sudo without a password)
set -euo pipefail
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "container engine: docker (daemon answers)"; exit 0
fi
missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ "${#missing[@]}" = 0 ]; then
  echo "container engine: $(podman --version)"; exit 0
fi
command -v apt-get >/dev/null 2>&1 || {
  echo "no container engine and no apt-get: install Docker, or podman with runc, then rerun" >&2; exit 1; }
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || {
    echo "installing ${missing[*]} needs root: sudo apt-get install -y podman runc debootstrap, then rerun" >&2; exit 1; }
  SUDO="sudo -n"
fi
echo "Installing ${missing[*]} from Debian's packages (container engine for make run-containers)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq podman runc debootstrap >/dev/null
echo "container engine: $(podman --version)"
